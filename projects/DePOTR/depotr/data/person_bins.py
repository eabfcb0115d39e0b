"""Per-person attributes of COCO keypoint annotations and their bins (size, truncation, occlusion,
crowding), from COCO's standard fields so that they apply to COCO as to the synthetic data.

Shapes: N persons of one image, K keypoints.

* size (COCO's area ranges): small ``area < 32^2``, medium ``32^2 <= area <= 96^2``, large above;
* truncation: the person's ``synthetic.truncated`` flag where the generator wrote one (a keypoint
  of the figure lies outside the image or the figure reaches the border), else its box touching
  the image border (within 1 px);
* occlusion: the share of the labelled keypoints (v > 0) that are occluded (v = 1);
* crowding: CrowdPose's crowd index of a person (Li et al., CVPR 2019): the number of labelled
  keypoints of *other* persons inside its box divided by the number of its own labelled
  keypoints; bins are CrowdPose's easy [0, 0.1], medium (0.1, 0.8], hard (0.8, inf).
"""

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["BINS", "crowd_indices", "occluded_fraction", "person_bins", "size_bin", "truncated"]

# Attribute -> (bin name, upper bound inclusive) in increasing order; "truncation" is boolean.
BINS: Dict[str, Tuple[Tuple[str, float], ...]] = {
    "size": (("small", 32.0**2 - 1e-9), ("medium", 96.0**2), ("large", float("inf"))),
    "truncation": (("whole", 0.5), ("truncated", float("inf"))),
    "occlusion": (("light", 0.2), ("moderate", 0.5), ("heavy", float("inf"))),
    "crowd": (("easy", 0.1), ("medium", 0.8), ("hard", float("inf"))),
}


def _bin(attribute: str, value: float) -> str:
    return next(name for name, upper in BINS[attribute] if value <= upper)


def size_bin(area: float) -> str:
    """COCO's size bin of an ``area`` in pixels."""
    return _bin("size", area)


def truncated(annotation: Dict[str, Any], width: int, height: int) -> bool:
    """Whether a person is cut by the image border (rule in the module docstring)."""
    synthetic = annotation.get("synthetic", {})
    if "truncated" in synthetic:
        return bool(synthetic["truncated"])
    x, y, w, h = annotation["bbox"]
    return x <= 1 or y <= 1 or x + w >= width - 1 or y + h >= height - 1


def occluded_fraction(keypoints: Sequence[float]) -> float:
    """Share of the labelled keypoints (v > 0) with v = 1; 0 when none is labelled."""
    v = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)[:, 2]
    labelled = int((v > 0).sum())
    return float((v == 1).sum()) / labelled if labelled else 0.0


def crowd_indices(keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """CrowdPose crowd index of each person of one image.

    Args:
        keypoints: (N, K, 3) or (N, 3K) x, y, v.
        boxes: (N, 4) x, y, w, h.
    Returns:
        (N,) labelled keypoints of the other persons inside each person's box over its own
        labelled keypoints (0 for a person without labelled keypoints).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(boxes), -1, 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labelled = keypoints[..., 2] > 0  # (N, K)
    x, y = keypoints[..., 0], keypoints[..., 1]
    x0, y0 = boxes[:, 0, None, None], boxes[:, 1, None, None]
    x1, y1 = x0 + boxes[:, 2, None, None], y0 + boxes[:, 3, None, None]
    # inside[i, j, k]: keypoint k of person j lies in the box of person i.
    inside = (x[None] >= x0) & (x[None] <= x1) & (y[None] >= y0) & (y[None] <= y1) & labelled[None]
    counts = inside.sum(-1).astype(np.float64)  # (N, N)
    own = labelled.sum(-1).astype(np.float64)
    others = counts.sum(1) - np.diagonal(counts)
    return np.where(own > 0, others / np.maximum(own, 1.0), 0.0)


def person_bins(gt: Dict[str, Any]) -> Dict[int, Dict[str, str]]:
    """Annotation id -> {attribute: bin name} for every annotation of a COCO keypoints dict."""
    missing = next((img for img in gt["images"] if "width" not in img or "height" not in img), None)
    if missing is not None:
        raise ValueError(
            f"ground-truth image {missing.get('id')} has no 'width' and 'height' (the truncation bin needs them)"
        )
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    by_image: Dict[Any, List[Dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out: Dict[int, Dict[str, str]] = {}
    for image_id, anns in by_image.items():
        if image_id not in sizes:
            raise ValueError(f"ground-truth annotation {anns[0].get('id')} has image_id {image_id}, not in 'images'")
        width, height = sizes[image_id]
        crowd = crowd_indices([a["keypoints"] for a in anns], [a["bbox"] for a in anns])
        for ann, index in zip(anns, crowd):
            out[ann["id"]] = {
                "size": size_bin(ann["area"]),
                "truncation": _bin("truncation", float(truncated(ann, width, height))),
                "occlusion": _bin("occlusion", occluded_fraction(ann["keypoints"])),
                "crowd": _bin("crowd", float(index)),
            }
    return out
