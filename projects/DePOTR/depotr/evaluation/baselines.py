"""Trivial baselines that every accuracy figure is reported beside.

The mean-pose baseline (no model): each keypoint's mean position in box-normalised coordinates
over the labelled keypoints of the training persons,

    m_k = mean over training persons p with v_pk > 0 of ((x_pk - x0_p) / w_p, (y_pk - y0_p) / h_p),

is placed in every ground-truth box of the evaluated set, (x0 + m_kx w, y0 + m_ky h), with score
1 for every person. Its OKS AP says how much of a model's AP a fixed pose in the right box earns.
"""

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .error_analysis import METRIC_NAMES, build_coco, check_ground_truth, evaluate_keypoints, resolve_sigmas

__all__ = ["mean_pose", "mean_pose_results", "mean_pose_baseline_metrics"]


def mean_pose(train_gt: Dict[str, Any]) -> np.ndarray:
    """Returns (K, 2) mean box-normalised (x, y) of each keypoint over the labelled keypoints of
    the persons of ``train_gt`` (a COCO keypoints dict). Raises if a keypoint is never labelled."""
    num_keypoints = check_ground_truth(train_gt)
    total = np.zeros((num_keypoints, 2))
    count = np.zeros(num_keypoints)
    for ann in train_gt["annotations"]:
        x0, y0, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(num_keypoints, 3)
        labelled = kps[:, 2] > 0
        total[labelled] += (kps[labelled, :2] - [x0, y0]) / [w, h]
        count[labelled] += 1
    if (count == 0).any():
        names = train_gt["categories"][0]["keypoints"]
        raise ValueError(
            f"keypoints never labelled in the training set: {[names[k] for k in np.nonzero(count == 0)[0]]}"
        )
    return total / count[:, None]


def mean_pose_results(pose: np.ndarray, gt: Dict[str, Any]) -> List[Dict[str, Any]]:
    """COCO keypoint results: ``pose`` (K, 2) placed in every box of ``gt``, score 1."""
    category_id = gt["categories"][0]["id"]
    results = []
    for ann in gt["annotations"]:
        x0, y0, w, h = ann["bbox"]
        xy = pose * [w, h] + [x0, y0]
        keypoints = np.concatenate([xy, np.ones((len(pose), 1))], axis=1)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": category_id,
                "keypoints": keypoints.ravel().tolist(),
                "score": 1.0,
            }
        )
    return results


def mean_pose_baseline_metrics(
    train_gt: Dict[str, Any], gt: Dict[str, Any], sigmas: Optional[Sequence[float]] = None
) -> Dict[str, float]:
    """The 10 COCO keypoint metrics (in %) of the mean-pose baseline of ``train_gt`` on ``gt``
    (a ValueError when their keypoint names differ)."""
    check_ground_truth(gt)
    pose = mean_pose(train_gt)
    train_names, names = list(train_gt["categories"][0]["keypoints"]), list(gt["categories"][0]["keypoints"])
    if train_names != names:
        raise ValueError(
            f"the baseline's training keypoints {train_names} are not the evaluated ground truth's {names}"
        )
    results = mean_pose_results(pose, gt)
    coco_eval = evaluate_keypoints(build_coco(gt), results, resolve_sigmas(sigmas, gt))
    return {name: 100.0 * float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats)}
