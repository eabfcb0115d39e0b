#!/usr/bin/env python
"""Draws DePOTR's predicted skeletons on images (Detectron2 demo conventions).

    python demo/demo.py --config-file configs/depotr_hm_r18_synthetic.yaml \
        --input photos/*.jpg --output out/ --opts MODEL.WEIGHTS output/depotr_hm_r18_synthetic/model_final.pth

Person boxes: this demo treats the whole image as one person (the single-person mode of a
top-down model). Boxes from a person detector are the next step (MODEL.DEPOTR.DETECTOR).
An image that cannot be read is skipped with a message; the demo then exits non-zero.
"""
import argparse
import glob
import os
import sys
from typing import List

import cv2
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from depotr.config import load_depotr_config
from depotr.data import coco_person_metadata


def setup(config_file: str, opts: List[str]) -> CfgNode:
    cfg = load_depotr_config(config_file, opts)
    # The caller's boxes (here: the whole image) arrive as "proposals".
    cfg.MODEL.DEPOTR.BOX_SOURCE = "precomputed"
    cfg.freeze()
    return cfg


def expand_inputs(patterns: List[str]) -> List[str]:
    """Files, globs and folders (their files, sorted) -> file paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            paths += sorted(os.path.join(pattern, f) for f in os.listdir(pattern))
        else:
            paths += sorted(glob.glob(os.path.expanduser(pattern))) or [pattern]
    return paths


def whole_image_input(image) -> dict:
    """A model input whose only person box is the whole image (score 1)."""
    height, width = image.shape[:2]
    proposals = Instances((height, width))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, width, height]]))
    proposals.scores = torch.ones(1)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
    return {"image": tensor, "height": height, "width": width, "proposals": proposals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="image files, globs or folders")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    args = parser.parse_args()

    cfg = setup(args.config_file, args.opts)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    metadata = MetadataCatalog.get("__depotr_demo").set(**coco_person_metadata())
    os.makedirs(args.output, exist_ok=True)
    failures = 0
    for path in expand_inputs(args.input):
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except (OSError, ValueError, SyntaxError) as e:
            failures += 1
            print(f"skipping {path}: cannot read image ({e})", file=sys.stderr)
            continue
        with torch.no_grad():
            instances = model([whole_image_input(image)])[0]["instances"].to("cpu")
        drawn = Visualizer(convert_image_to_rgb(image, cfg.INPUT.FORMAT), metadata).draw_instance_predictions(instances)
        out_path = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out_path, cv2.cvtColor(drawn.get_image(), cv2.COLOR_RGB2BGR))
        print(f"{path} -> {out_path}: {len(instances)} persons")
    if failures:
        print(f"{failures} image(s) could not be read", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
