"""DePOTR's trainer: Detectron2's ``DefaultTrainer`` with DePOTR's data, optimizer, schedule,
evaluator, atomic checkpoints, CPU-capable DDP and exactly resumable iterations (what differs
between Detectron2 versions is in :mod:`depotr.engine.compat`)."""

import functools
import itertools
import logging
import os
import random
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import (
    DatasetFromList,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from ..data import DePOTRDatasetMapper, attach_precomputed_boxes_from_cfg, filter_person_annotations
from ..data.keypoint_metadata import keypoint_metadata_from_config
from ..evaluation import CrowdPoseEvaluator, PCKhEvaluator, build_keypoint_evaluator
from ..modeling.person_detector import PersonDetector, PoseWithDetector
from ..solver import build_lr_scheduler, build_optimizer
from .checkpoint import DePOTRCheckpointer
from .compat import CompatDefaultTrainer, map_dataset
from .detector import build_person_detector
from .hooks import IterationSeedHook
from .run_dir import METRICS_NAME, drop_metrics_after

# The window of Detectron2's default writers' medians (JSONWriter, CommonMetricPrinter).
SMOOTHING_WINDOW = 20


class ResumableTrainingSampler(TrainingSampler):
    """Detectron2's infinite ``TrainingSampler`` started ``start_index`` indices into this
    rank's stream, so that a resumed run sees the batches the uninterrupted run would."""

    def __init__(self, size: int, seed: int, start_index: int = 0):
        super().__init__(size, shuffle=True, seed=seed)
        self.start_index = start_index

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.start_index, None)


def sample_seed(seed: int, rank: int, position: int) -> int:
    """The seed of every RNG while the sample at ``position`` of rank ``rank``'s stream is
    mapped: a function of these numbers alone, not of process or worker state."""
    return int(np.random.SeedSequence([seed, rank, position]).generate_state(1)[0]) % 2**31


class SeededSampleStream(torch.utils.data.IterableDataset):
    """One rank's training samples as a stream that restarts exactly at any batch, with any number
    of data-loader workers (docs/resume.md).

    Sample p of the stream (p = iteration x ``batch_size`` + place in the batch) is
    ``dataset[i_p]``, i_p the sampler's p-th index, mapped with every RNG seeded by
    :func:`sample_seed` (seed, rank, p). Of W workers, worker w maps the whole batches w, w + W, ...,
    which torch's ``DataLoader`` takes in turn: batch b is samples [b x batch_size, (b + 1) x
    batch_size) for 0, 1 or W workers, resumed or not (Detectron2's ``ToIterableDataset`` deals
    single indices instead).

    Args:
        dataset: map-style dataset of mapped samples (``map_dataset``).
        sampler: this rank's infinite index stream, started at a multiple of ``batch_size``.
        batch_size: images per batch of this rank.
        seed: the run's seed (``training_seed``).
    """

    def __init__(
        self, dataset: torch.utils.data.Dataset, sampler: ResumableTrainingSampler, batch_size: int, seed: int
    ):
        if sampler.start_index % batch_size:
            raise ValueError(f"the sampler starts at {sampler.start_index}, not a multiple of batch {batch_size}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = comm.get_rank()

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for offset, index in enumerate(self.sampler):
            if (offset // self.batch_size) % workers == worker:
                # In the main process (0 workers) the model's RNG state is put back after mapping,
                # so that its draws (IterationSeedHook's) are those of a run with workers.
                states = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if info is None else None
                seed_all_rng(sample_seed(self.seed, self.rank, self.sampler.start_index + offset))
                sample = self.dataset[index]
                if states is not None:
                    random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
                yield sample


def build_resumable_train_loader(
    dataset: torch.utils.data.Dataset, seed: int, total_batch_size: int, num_workers: int, start_iter: int = 0
) -> torch.utils.data.DataLoader:
    """This rank's infinite training batches (lists of mapped samples) from iteration
    ``start_iter`` on: the same batches for any ``num_workers`` and whether resumed or not
    (:class:`SeededSampleStream`). ``dataset``: map-style, of mapped samples."""
    batch_per_rank = total_batch_size // comm.get_world_size()
    sampler = ResumableTrainingSampler(len(dataset), seed=seed, start_index=start_iter * batch_per_rank)
    return build_detection_train_loader(
        SeededSampleStream(dataset, sampler, batch_per_rank, seed),
        mapper=None,
        sampler=None,
        total_batch_size=total_batch_size,
        aspect_ratio_grouping=False,
        num_workers=num_workers,
    )


def training_seed(cfg: CfgNode) -> int:
    """The seed shared by all ranks: ``cfg.SEED`` when set (>= 0), else a random shared one."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def load_training_dicts(cfg: CfgNode) -> List[dict]:
    """Dataset dicts of ``DATASETS.TRAIN``, keeping persons with >= 1 labelled keypoint (counts
    of what was dropped, and why, are logged). A ValueError naming the datasets when no person
    is left."""
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    kept, stats = filter_person_annotations(dicts, return_stats=True)
    if not kept:
        raise ValueError(
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has no person to train on: the training filter (non-crowd "
            f"persons with >= 1 labelled keypoint, v > 0) dropped every person of its {len(dicts)} images "
            f"({stats['persons_dropped_crowd']} crowd, {stats['persons_dropped_no_keypoints']} without labelled "
            "keypoints)"
        )
    return kept


class Trainer(CompatDefaultTrainer):
    """Trains and evaluates a DePOTR config (see ``train_net.py``)."""

    # Backbone-only files (ImageNet weights) may start a training run (see DePOTRCheckpointer).
    checkpointer_class = functools.partial(DePOTRCheckpointer, allow_backbone_only=True)

    def __init__(self, cfg: CfgNode, person_detector: Optional[PersonDetector] = None):
        """``person_detector``: the detector this trainer's evaluations run beside the model when
        ``TEST_BOX_SOURCE`` is "detector" (None: built, strictly, by the first evaluation)."""
        self._seed = training_seed(cfg)  # build_train_loader's sampler needs it
        # This trainer's evaluations (EvalHook calls self.test) share one person detector.
        self._person_detector = person_detector
        self._recent_scalars: Dict[str, List[Tuple[float, float]]] = {}  # from the checkpoint resumed
        self.test = self._test_reusing_detector
        super().__init__(cfg)

    def build_hooks(self):
        return [IterationSeedHook(self._seed)] + super().build_hooks()

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if resume and comm.is_main_process():  # the rows the resumed run writes again (all: no checkpoint)
            drop_metrics_after(os.path.join(self.cfg.OUTPUT_DIR, METRICS_NAME), self.start_iter)
        if self.start_iter > 0:
            # Continue the sampler's stream where the checkpointed run stopped.
            self.set_train_loader(self.build_train_loader(self.cfg, start_iter=self.start_iter))

    def state_dict(self) -> dict:
        # The world size the sample stream is sharded for: a resume under another one draws other batches.
        state = dict(super().state_dict(), world_size=comm.get_world_size())
        storage = getattr(self, "storage", None)  # TrainerBase.train's EventStorage (None before training)
        if storage is not None:  # the smoothed scalars' last values, for the resumed run's medians
            hints = storage.smoothing_hints()
            state["recent_scalars"] = {
                name: history.values()[-SMOOTHING_WINDOW:]
                for name, history in storage.histories().items()
                if hints[name]
            }
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._recent_scalars = state_dict.get("recent_scalars", {})
        saved, now = state_dict.get("world_size", comm.get_world_size()), comm.get_world_size()
        if saved != now:
            logging.getLogger(__name__).warning(
                f"--resume with {now} process(es) continues a run checkpointed with {saved}: the sampler shards "
                f"the training stream by rank, so the run continues on other batches (not a continuation, "
                f"docs/resume.md); resume with --num-gpus x --num-machines = {saved} to continue it exactly"
            )

    def before_train(self) -> None:
        # A resumed run's EventStorage starts empty: the medians over SMOOTHING_WINDOW iterations that
        # metrics.json and the console log (total_loss, ...) took only the resumed iterations.
        for name, values in self._recent_scalars.items():
            for value, iteration in values:
                self.storage.histories()[name].update(value, iteration)
        super().before_train()

    def after_train(self) -> None:
        # A resumed finished run (start_iter == max_iter) runs no step, so TrainerBase.train's final
        # ``iter += 1`` leaves max_iter + 1: its re-evaluation's metrics.json row goes at max_iter,
        # where the finished run wrote its final evaluation (dropped by resume_or_load).
        self.iter = min(self.iter, self.max_iter)
        super().after_train()

    def build_train_loader(self, cfg: CfgNode, start_iter: int = 0):
        dicts = load_training_dicts(cfg)
        # An unreadable image (the mapper returns None) is replaced by another one.
        dataset = map_dataset(DatasetFromList(dicts, copy=False), DePOTRDatasetMapper(cfg, is_train=True))
        return build_resumable_train_loader(
            dataset, self._seed, cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS, start_iter
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
        dicts = attach_precomputed_boxes_from_cfg(cfg, dataset_name, dicts)
        return build_detection_test_loader(
            dicts, mapper=DePOTRDatasetMapper(cfg, is_train=False), num_workers=cfg.DATALOADER.NUM_WORKERS
        )

    @classmethod
    def test(
        cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None, person_detector: Optional[PersonDetector] = None
    ):
        """``DefaultTrainer.test``; with ``MODEL.DEPOTR.TEST_BOX_SOURCE`` "detector" the person
        detector of ``MODEL.DEPOTR.DETECTOR`` (``person_detector``, else built now) runs beside
        ``model`` (``PoseWithDetector``)."""
        if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector":
            if person_detector is None:
                person_detector = build_person_detector(cfg)
            model = PoseWithDetector(person_detector, model, cfg.INPUT.FORMAT)
        return super().test(cfg, model, evaluators)

    def _test_reusing_detector(self, cfg: CfgNode, model: torch.nn.Module, evaluators=None):
        """:meth:`test` with this trainer's person detector, built at the first call that needs it."""
        if self._person_detector is None and cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector":
            self._person_detector = build_person_detector(cfg)
        return type(self).test(cfg, model, evaluators, self._person_detector)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "mpii_pckh":
            return PCKhEvaluator(dataset_name, output_dir=output_folder)
        sigmas = keypoint_metadata_from_config(cfg).oks_sigmas  # the keypoint table's, or TEST.KEYPOINT_OKS_SIGMAS
        if evaluator_type == "crowdpose":
            return CrowdPoseEvaluator(dataset_name, sigmas, output_dir=output_folder)
        return build_keypoint_evaluator(dataset_name, sigmas, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)
