#!/usr/bin/env python
r"""Draws a trained model's predicted skeletons on the first images of its test set.

    python tools/visualize_predictions.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --output output/depotr_hm_r18_synthetic/predictions --num-images 6 \
        MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth   # or --opts MODEL.WEIGHTS ...

Each PNG, ``<image id>_<file name>.png``, shows the ground-truth skeletons (left) next to the
predictions (right), or the predictions alone for an image without ground truth (a record with no
``annotations``, as in an unlabelled test set; an empty list is an image with no person), drawn
with Detectron2's ``Visualizer`` and the dataset's keypoint metadata. The model runs on the CPU,
with the person boxes of MODEL.DEPOTR.TEST_BOX_SOURCE as in evaluation (with "detector", the
person detector of MODEL.DEPOTR.DETECTOR runs beside it, as ``Trainer.test`` does); an empty
MODEL.WEIGHTS (or DETECTOR.WEIGHTS) is an error unless --random-weights is given.
"""

import argparse
import os
import re
import sys
from typing import List, Optional

from depotr.cli import add_config_arguments, config_overrides, parse_command_line, run_main
from depotr.file_io import output_problem, write_image


def draw(image_rgb, instances, metadata):
    """Returns ``image_rgb`` (H, W, 3) with boxes and skeletons of ``instances`` drawn."""
    from detectron2.utils.visualizer import Visualizer

    visualizer = Visualizer(image_rgb, metadata, scale=2.0)
    return visualizer.draw_instance_predictions(instances.to("cpu")).get_image()


def gt_as_predictions(instances):
    """Ground-truth ``Instances`` renamed to the prediction fields the ``Visualizer`` draws."""
    from detectron2.structures import Instances

    shown = Instances(instances.image_size)
    shown.pred_boxes = instances.gt_boxes
    shown.pred_keypoints = instances.gt_keypoints.tensor
    return shown


def output_name(dataset_dict: dict) -> str:
    """``<image id>_<file name stem>.png``: unique within a dataset (its image ids are), even where
    images in different folders share a file name; characters other than letters, digits, ``.``
    and ``-`` become ``_``."""
    stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
    return re.sub(r"[^\w.-]", "_", f"{dataset_dict['image_id']}_{stem}") + ".png"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--num-images", type=int, default=6, help="how many test images to draw (>= 1)")
    add_config_arguments(parser)
    args = parse_command_line(parser, argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1, got {args.num_images}")
    problem = output_problem(args.output, folder=True, create=True)  # before the model and the data
    if problem:
        parser.error(f"--output {args.output}: {problem}")

    import cv2
    import numpy as np
    import torch

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.detection_utils import convert_image_to_rgb
    from detectron2.utils.logger import setup_logger

    from depotr.config import load_depotr_config
    from depotr.data import (
        DePOTRDatasetMapper,
        attach_precomputed_boxes_from_cfg,
        check_datasets_registered,
        register_synthetic_datasets_from_cfg,
    )
    from depotr.engine.detector import build_person_detector
    from depotr.export import build_cpu_model
    from depotr.modeling.person_detector import PoseWithDetector

    setup_logger(name="depotr")
    cfg = load_depotr_config(args.config_file, config_overrides(args))
    cfg.MODEL.DEVICE = "cpu"  # the person detector too
    cfg.freeze()
    register_synthetic_datasets_from_cfg(cfg)
    check_datasets_registered(cfg, keys=("TEST",))  # before the model is built
    model = build_cpu_model(cfg, args.random_weights)  # the weights are checked before the data
    if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE == "detector":  # as Trainer.test
        model = PoseWithDetector(build_person_detector(cfg, args.random_weights), model, cfg.INPUT.FORMAT).eval()
    dataset_name = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset_name)
    dicts = attach_precomputed_boxes_from_cfg(cfg, dataset_name, DatasetCatalog.get(dataset_name)[: args.num_images])
    mapper = DePOTRDatasetMapper(cfg, is_train=False)

    for dataset_dict in dicts:
        inputs = mapper(dataset_dict)
        with torch.no_grad():
            predictions = model([inputs])[0]["instances"]
        image = convert_image_to_rgb(inputs["image"].permute(1, 2, 0).numpy(), cfg.INPUT.FORMAT)
        panels = [draw(image, predictions, metadata)]
        if "instances" in inputs:  # the mapper's ground truth, when the record has annotations
            panels.insert(0, draw(image, gt_as_predictions(inputs["instances"]), metadata))
        path = os.path.join(args.output, output_name(dataset_dict))
        write_image(path, cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR))
        alone = "" if len(panels) == 2 else " (no ground truth: predictions only)"
        print(f"{path}: {len(predictions)} persons{alone}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
