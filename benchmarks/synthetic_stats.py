#!/usr/bin/env python
"""Statistics of COCO person-keypoint annotations, for comparing the synthetic data with COCO
(benchmarks/README.md, "Synthetic persons v4 vs COCO").

    # a synthetic split, rendered in memory (no cache written)
    python benchmarks/synthetic_stats.py --version 4 --split val --num-images 200
    # any COCO keypoints json, e.g. COCO's own
    python benchmarks/synthetic_stats.py --gt datasets/coco/annotations/person_keypoints_val2017.json

Counted over the persons with labelled keypoints (``num_keypoints > 0``, iscrowd 0: the persons
COCO's keypoint evaluation scores) and the images holding at least one of them:

* persons per image (mean) and the share of images with 1, 2-3, 4+ persons;
* size bins (COCO's areas: small < 32^2, medium, large > 96^2) and the mean labelled keypoints;
* keypoint flags: shares of v = 0 / 1 / 2 among all 17 slots, and of v = 1 among labelled ones;
* truncation: boxes touching the image border (within 1 px), and the generator's own flag;
* crowding: CrowdPose's image crowd index (mean of the persons' indices,
  ``depotr.data.person_bins.crowd_indices``) in CrowdPose's easy / medium / hard ranges, persons
  whose box overlaps another with IoU > 0.5 (OCHuman's criterion for heavy occlusion) and
  images with a box pair of IoU > 0.1 (COCO-Crowd's criterion).
"""

import argparse
import json
import sys
from typing import Any, Dict, List

import numpy as np

from depotr.data.person_bins import crowd_indices, size_bin
from depotr.data.synthetic import SPLIT_CODES
from depotr.data.synthetic_cache import RENDERERS
from depotr.file_io import load_json


def _rendered_dataset(version: int, split: str, num_images: int, seed: int, size: int) -> Dict[str, Any]:
    images, annotations = [], []
    for index in range(num_images):
        _, annos = RENDERERS[version](seed, SPLIT_CODES[split], index, size)
        images.append({"id": index + 1, "width": size, "height": size})
        annotations += [dict(a, image_id=index + 1) for a in annos]
    return {"images": images, "annotations": annotations}


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """(N, N) IoU of (N, 4) x, y, w, h boxes, 0 on the diagonal."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = iw * ih
    area = boxes[:, 2] * boxes[:, 3]
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1e-9)
    np.fill_diagonal(iou, 0.0)
    return iou


def dataset_statistics(dataset: Dict[str, Any]) -> Dict[str, float]:
    """The statistics of the module docstring (shares in %) of a COCO keypoints dict; ValueError
    when it is not one (naming what is missing) or has no person to count."""
    if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), list) for k in ("images", "annotations")):
        raise ValueError("expected a COCO dict with the lists 'images' and 'annotations'")
    try:
        sizes = {img["id"]: (img["width"], img["height"]) for img in dataset["images"]}
    except KeyError as e:
        raise ValueError(f"an entry of 'images' has no {e.args[0]!r}") from None
    by_image: Dict[Any, List[Dict[str, Any]]] = {}
    for ann in dataset["annotations"]:
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd", 0):
            if ann.get("image_id") not in sizes:
                raise ValueError(f"annotation {ann.get('id')!r}: image_id {ann.get('image_id')!r} is not in 'images'")
            by_image.setdefault(ann["image_id"], []).append(ann)
    persons = [a for anns in by_image.values() for a in anns]
    if not persons:
        raise ValueError("no annotation with num_keypoints > 0: nothing to count")
    counts = np.array([len(anns) for anns in by_image.values()])
    v = np.concatenate([np.asarray(a["keypoints"], np.float64).reshape(-1, 3)[:, 2] for a in persons])
    bins = [size_bin(a["area"]) for a in persons]
    touching, image_crowd, heavy_overlap, crowd_pairs = [], [], [], []
    for image_id, anns in by_image.items():
        width, height = sizes[image_id]
        boxes = np.array([a["bbox"] for a in anns], np.float64)
        touching += [x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1 for x, y, w, h in boxes.tolist()]
        keypoints = np.stack([np.asarray(a["keypoints"], np.float64) for a in anns])
        image_crowd.append(float(crowd_indices(keypoints, boxes).mean()))
        iou = _iou_matrix(boxes)
        heavy_overlap += (iou.max(1) > 0.5).tolist()
        crowd_pairs.append(bool((iou > 0.1).any()))
    image_crowd = np.array(image_crowd)
    flagged = [a["synthetic"]["truncated"] for a in persons if "truncated" in a.get("synthetic", {})]
    stats = {
        "images with persons": float(len(by_image)),
        "persons (num_keypoints > 0)": float(len(persons)),
        "persons per image": float(counts.mean()),
        "images with 1 person %": 100.0 * float((counts == 1).mean()),
        "images with 2-3 persons %": 100.0 * float(((counts >= 2) & (counts <= 3)).mean()),
        "images with 4+ persons %": 100.0 * float((counts >= 4).mean()),
        "small persons %": 100.0 * bins.count("small") / len(bins),
        "medium persons %": 100.0 * bins.count("medium") / len(bins),
        "large persons %": 100.0 * bins.count("large") / len(bins),
        "labelled keypoints per person": float((v > 0).sum() / len(persons)),
        "keypoints v=0 %": 100.0 * float((v == 0).mean()),
        "keypoints v=1 %": 100.0 * float((v == 1).mean()),
        "keypoints v=2 %": 100.0 * float((v == 2).mean()),
        "occluded among labelled (v=1 / v>0) %": 100.0 * float((v == 1).sum() / max((v > 0).sum(), 1)),
        "boxes touching the border %": 100.0 * float(np.mean(touching)),
        "image crowd index mean": float(image_crowd.mean()),
        "images crowd index <= 0.1 (easy) %": 100.0 * float((image_crowd <= 0.1).mean()),
        "images crowd index 0.1-0.8 (medium) %": 100.0 * float(((image_crowd > 0.1) & (image_crowd <= 0.8)).mean()),
        "images crowd index > 0.8 (hard) %": 100.0 * float((image_crowd > 0.8).mean()),
        "persons with max box IoU > 0.5 %": 100.0 * float(np.mean(heavy_overlap)),
        "images with a box pair IoU > 0.1 %": 100.0 * float(np.mean(crowd_pairs)),
    }
    if flagged:
        stats["truncated (generator's flag) %"] = 100.0 * float(np.mean(flagged))
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", help="a COCO person keypoints json (instead of rendering a synthetic split)")
    parser.add_argument("--version", type=int, default=4, choices=sorted(RENDERERS), help="synthetic generator")
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_CODES))
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--json", help="also write the statistics to this json file")
    args = parser.parse_args(argv)
    source = args.gt or f"synthetic v{args.version} {args.split}, {args.num_images} images, seed {args.seed}"
    try:
        if args.gt:
            dataset = load_json(args.gt, "COCO keypoints")
        else:
            dataset = _rendered_dataset(args.version, args.split, args.num_images, args.seed, args.image_size)
        stats = dataset_statistics(dataset)
    except (OSError, ValueError) as e:
        print(f"synthetic_stats: {source}: {e}", file=sys.stderr)
        return 1
    print(f"| statistic | {source} |\n|---|---|")
    for name, value in stats.items():
        print(f"| {name} | {value:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": source, "statistics": stats}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
