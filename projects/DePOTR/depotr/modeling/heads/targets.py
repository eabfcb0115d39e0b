"""Which ground-truth keypoints supervise a crop: one rule for every head and loss."""

from typing import Tuple

import torch


def keypoint_target_weights(gt_keypoints: torch.Tensor, crop_size: Tuple[int, int]) -> torch.Tensor:
    """B crops, K keypoints. Returns (B, K) float weights: 1 where the keypoint is labelled
    (v > 0) and inside the crop, else 0.

    Args:
        gt_keypoints: (B, K, 3) (x, y, v) in continuous crop pixels (pixel i covers [i, i+1)).
        crop_size: (H, W); the crop covers [0, W) x [0, H).
    """
    height, width = crop_size
    x, y, v = gt_keypoints.unbind(-1)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return ((v > 0) & inside).to(gt_keypoints.dtype)
