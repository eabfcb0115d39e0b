#!/usr/bin/env python
"""Draws a trained model's predicted skeletons on the first images of its test set.

    python tools/visualize_predictions.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --output output/depotr_hm_r18_synthetic/predictions --num-images 6 \
        MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth

Each PNG shows the ground-truth skeletons (left) next to the predictions (right), drawn with
Detectron2's ``Visualizer`` and the dataset's keypoint metadata.
"""

import argparse
import os
from typing import List

import cv2
import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

from depotr.config import load_depotr_config
from depotr.data import DePOTRDatasetMapper, attach_precomputed_boxes_from_cfg, register_synthetic_datasets_from_cfg
from depotr.engine import DePOTRCheckpointer


def setup(config_file: str, opts: List[str]) -> CfgNode:
    cfg = load_depotr_config(config_file, opts)
    cfg.freeze()
    register_synthetic_datasets_from_cfg(cfg)
    return cfg


def draw(image_rgb: np.ndarray, instances: Instances, metadata) -> np.ndarray:
    """Returns ``image_rgb`` (H, W, 3) with boxes and skeletons of ``instances`` drawn."""
    visualizer = Visualizer(image_rgb, metadata, scale=2.0)
    return visualizer.draw_instance_predictions(instances.to("cpu")).get_image()


def gt_as_predictions(instances: Instances) -> Instances:
    """Ground-truth ``Instances`` renamed to the prediction fields the ``Visualizer`` draws."""
    shown = Instances(instances.image_size)
    shown.pred_boxes = instances.gt_boxes
    shown.pred_keypoints = instances.gt_keypoints.tensor
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()
    setup_logger(name="depotr")

    cfg = setup(args.config_file, args.opts)
    dataset_name = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset_name)
    dicts = attach_precomputed_boxes_from_cfg(cfg, dataset_name, DatasetCatalog.get(dataset_name)[: args.num_images])
    mapper = DePOTRDatasetMapper(cfg, is_train=False)
    model = build_model(cfg).eval()
    DePOTRCheckpointer(model).load(cfg.MODEL.WEIGHTS)

    os.makedirs(args.output, exist_ok=True)
    for dataset_dict in dicts:
        inputs = mapper(dataset_dict)
        with torch.no_grad():
            predictions = model([inputs])[0]["instances"]
        image = convert_image_to_rgb(inputs["image"].permute(1, 2, 0).numpy(), cfg.INPUT.FORMAT)
        panels = [draw(image, gt_as_predictions(inputs["instances"]), metadata), draw(image, predictions, metadata)]
        path = os.path.join(args.output, f"{os.path.splitext(os.path.basename(dataset_dict['file_name']))[0]}.png")
        cv2.imwrite(path, cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR))
        print(f"{path}: {len(predictions)} persons")


if __name__ == "__main__":
    main()
