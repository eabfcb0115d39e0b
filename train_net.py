#!/usr/bin/env python
r"""Trains and evaluates DePOTR models with Detectron2's trainer.

    python train_net.py --config-file configs/depotr_r50.yaml --num-gpus 4
    python train_net.py --config-file configs/depotr_r50.yaml --eval-only MODEL.WEIGHTS model.pth  # or --opts KEY VALUE
    python train_net.py --config-file configs/depotr_r50.yaml --eval-only MODEL.WEIGHTS model.pth \
        MODEL.DEPOTR.TEST_BOX_SOURCE detector \
        MODEL.DEPOTR.DETECTOR.CONFIG_FILE model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \
        MODEL.DEPOTR.DETECTOR.WEIGHTS model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml
    python train_net.py --config-file configs/depotr_hm_r18_synthetic.yaml   # CPU, embedded data

With TEST_BOX_SOURCE "detector", ``Trainer.test`` runs the person detector beside the pose model
(``depotr.modeling.person_detector.PoseWithDetector``); MODEL.WEIGHTS holds the pose model only, the
detector loads MODEL.DEPOTR.DETECTOR.WEIGHTS (empty: an error unless ``--random-weights``).
Without CUDA, ``--num-gpus N`` starts N CPU processes (gloo). One run at a time per OUTPUT_DIR, and a
new training run never in the folder of an earlier one: ``--resume`` continues that
(``depotr.engine.run_dir``); every ``depotr.*`` log record goes to OUTPUT_DIR/log.txt and, on
rank 0, the console, as Detectron2's own.
"""

import logging
import os
import sys

from depotr.cli import config_overrides, listing, parse_command_line, run_main, training_argument_parser


def setup(args, cfg=None):
    """Builds the frozen config from ``cfg``, the unfrozen config :func:`cli` loaded (None: loads
    defaults, DePOTR keys, the yaml file, then the overrides), takes OUTPUT_DIR's run lock on the
    main process and sets up logging."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from depotr.config import load_depotr_config
    from depotr.data import (
        attach_precomputed_boxes_from_cfg,
        check_datasets_registered,
        check_keypoint_count,
        fill_keypoint_config,
        register_synthetic_datasets_from_cfg,
    )
    from depotr.data.keypoint_metadata import warn_unpaired_mirrors
    from depotr.engine.checkpoint import check_checkpoint_fits
    from depotr.engine.run_dir import config_changes, lock_output_dir, saved_config
    from depotr.engine.trainer import load_training_dicts
    from depotr.file_io import atomic_write
    from depotr.solver import apply_epoch_schedule

    if cfg is None:
        cfg = load_depotr_config(args.config_file, config_overrides(args))
    register_synthetic_datasets_from_cfg(cfg)
    check_datasets_registered(cfg)  # before OUTPUT_DIR is taken
    # A dataset of register_keypoint_dataset gives its keypoints, before config.yaml is written.
    keypoints_from_dataset = fill_keypoint_config(cfg)
    lock, run_config, run_config_yaml = None, None, None
    config_yaml = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    if comm.is_main_process() and cfg.OUTPUT_DIR:  # before default_setup writes log.txt and config.yaml
        lock = lock_output_dir(cfg.OUTPUT_DIR, resume=args.resume, eval_only=args.eval_only)
        if args.resume and not args.eval_only:
            run_config = saved_config(cfg.OUTPUT_DIR)  # compared once the epoch schedule is converted
        if args.eval_only and os.path.isfile(config_yaml):  # an evaluation keeps the run's record (seed, schedule)
            with open(config_yaml, "rb") as f:
                run_config_yaml = f.read()
        # default_setup writes config.yaml and log.txt: first the checkpoint main() loads must fit cfg
        # (a run's config.yaml would be overwritten; a new folder would hold a run that never started).
        if cfg.MODEL.WEIGHTS or (args.resume and os.path.isfile(config_yaml)):
            check_checkpoint_fits(cfg, resume=args.resume, eval_only=args.eval_only)
    comm.synchronize()  # the other ranks write their log.txt.rankN only into a folder rank 0 has taken
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="depotr")
    if run_config_yaml is not None:  # default_setup wrote this evaluation's config over it (log.txt has it too)
        atomic_write(config_yaml, lambda f: f.write(run_config_yaml))
        logging.getLogger("depotr").info(
            "--eval-only: kept the run's %s (this evaluation's config is logged above)", config_yaml
        )
    if lock is not None:
        lock.log_recovery()
    if keypoints_from_dataset:
        logging.getLogger("depotr").info(keypoints_from_dataset)
    else:  # keypoints the config names (register_keypoint_dataset warned about its own)
        model = cfg.MODEL.DEPOTR
        warn_unpaired_mirrors(
            model.KEYPOINT_NAMES,
            model.KEYPOINT_FLIP_MAP,
            "MODEL.DEPOTR.KEYPOINT_NAMES",
            "MODEL.DEPOTR.KEYPOINT_FLIP_MAP",
        )
    # Materialise generated datasets once, on the main process, before the others read them; a test
    # dataset's DATASETS.PRECOMPUTED_BOXES file is read now too, so that a bad one fails before training.
    if comm.is_main_process():
        for name in tuple(cfg.DATASETS.TRAIN) + tuple(cfg.DATASETS.TEST):
            dicts = DatasetCatalog.get(name)
            check_keypoint_count(cfg, name, dicts)
            if name in cfg.DATASETS.TEST:
                attach_precomputed_boxes_from_cfg(cfg, name, dicts)
    comm.synchronize()
    if not args.eval_only and cfg.SOLVER.MAX_EPOCHS > 0:
        # Counting the training images loads them once more than the Trainer does (start-up only).
        apply_epoch_schedule(cfg, len(load_training_dicts(cfg)))
        if comm.is_main_process() and cfg.OUTPUT_DIR:  # default_setup wrote the config's MAX_ITER / WARMUP_ITERS
            atomic_write(config_yaml, lambda f: f.write(cfg.dump().encode()))
    changes = config_changes(run_config, cfg.dump())
    if changes:
        logging.getLogger("depotr").warning(
            "--resume with a config that differs from the run's config.yaml in %d key(s): %s. The run continues "
            "under the new values; a new run needs another OUTPUT_DIR",
            len(changes),
            listing(changes, separator="; "),
        )
    cfg.freeze()
    return cfg


def main(args, cfg=None):
    from detectron2.evaluation import verify_results
    from detectron2.utils import comm

    from depotr.config import log_device
    from depotr.engine import DePOTRCheckpointer, Trainer
    from depotr.engine.detector import build_person_detector
    from depotr.modeling.meta_arch import build_pose_model

    cfg = setup(args, cfg)
    check_weights(cfg, args)  # again: the warning of --random-weights goes to log.txt too
    log_device(cfg.MODEL.DEVICE)
    # The detector of the evaluations, under the weights rule of the pose model (--random-weights).
    person_detector = None
    if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector" and cfg.DATASETS.TEST:
        person_detector = build_person_detector(cfg, args.random_weights)
    if args.eval_only:  # the inference model, without the training crop augmentation (the Trainer's is Detectron2's)
        model = build_pose_model(cfg, training=False).to(cfg.MODEL.DEVICE)
        logging.getLogger("depotr").info(f"Model:\n{model}")
        DePOTRCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model, person_detector=person_detector)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg, person_detector)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_weights(cfg, args) -> None:
    """The checkpoint main() loads (``checkpoint_to_load``: with --resume the run's last one, else
    MODEL.WEIGHTS) must exist; MODEL.WEIGHTS follows ``weights_to_load``'s rule when it is loaded
    for an evaluation or is set (a training run may start from scratch). ConfigErrors naming the file;
    a warning when ``--eval-only --resume`` evaluates the run's last checkpoint instead of a set MODEL.WEIGHTS."""
    from depotr.engine.checkpoint import checkpoint_to_load, weights_to_load

    weights, resumes = checkpoint_to_load(cfg.OUTPUT_DIR, cfg.MODEL.WEIGHTS, args.resume)
    not_loaded = cfg.MODEL.WEIGHTS and os.path.realpath(cfg.MODEL.WEIGHTS) != os.path.realpath(weights)
    if resumes and args.eval_only and not_loaded:
        logging.getLogger("depotr").warning(
            f"--eval-only --resume evaluates {weights}, the checkpoint {cfg.OUTPUT_DIR}/last_checkpoint names, not "
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: drop --resume to evaluate MODEL.WEIGHTS"
        )
    if not resumes and (args.eval_only or weights):
        weights_to_load(weights, args.random_weights)


def cli(argv=None) -> int:
    """Parses the arguments (before torch and Detectron2 are imported) and launches :func:`main`."""
    args = parse_command_line(training_argument_parser(__doc__), argv)
    print("Command Line Args:", args)
    from depotr.config import load_depotr_config
    from depotr.engine import launch
    from depotr.engine.detector import detector_weights_to_load
    from depotr.engine.run_dir import run_seed
    from depotr.modeling.meta_arch import check_pose_config
    from depotr.solver import check_training_schedule

    # Config and weights mistakes end here, before any process starts or any data is generated.
    overrides = config_overrides(args)
    cfg = load_depotr_config(args.config_file, overrides)
    check_pose_config(cfg)
    if not args.eval_only:
        check_training_schedule(cfg, args.num_gpus * args.num_machines, overrides)
        if cfg.SEED < 0:  # one seed for all processes, recorded in config.yaml for --resume
            cfg.SEED = run_seed(cfg.OUTPUT_DIR, args.resume)
    check_weights(cfg, args)
    if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector" and cfg.DATASETS.TEST:
        detector_weights_to_load(cfg, args.random_weights)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg),  # the config is loaded once, here; processes get a copy
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(cli))
