"""The keypoint losses and the one rule of which keypoints supervise a crop
(:func:`keypoint_target_weights`). B crops, K keypoints.

Normalisers are clamped to >= 1: a batch without supervised keypoints gives a zero loss that still
backpropagates. The masked losses give weight-0 keypoints an exactly zero gradient.
"""

from typing import Tuple

import torch
from torch.nn import functional as F


def keypoint_target_weights(gt_keypoints: torch.Tensor, crop_size: Tuple[int, int]) -> torch.Tensor:
    """Returns (B, K) float weights: 1 where the keypoint is labelled (v > 0) and inside the crop.

    Args:
        gt_keypoints: (B, K, 3) (x, y, v) in continuous crop pixels (pixel i covers [i, i+1)).
        crop_size: (H, W); the crop covers [0, W) x [0, H).
    """
    height, width = crop_size
    x, y, v = gt_keypoints.unbind(-1)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return ((v > 0) & inside).to(gt_keypoints.dtype)


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """SimpleBaseline's ``JointsMSELoss(use_target_weight=True)`` (Xiao et al. 2018): 0.5 x the
    mean over B K h w (clamped to >= 1) of weight x squared error.

    Args:
        pred, target: (B, K, h, w) heatmaps.
        weights: (B, K) target weights in {0, 1}.
    """
    squared = (pred - target) ** 2 * weights[..., None, None]
    return 0.5 * squared.sum() / max(squared.numel(), 1)


def coordinate_loss(coords: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """Smooth-L1 (L1 when ``beta`` is 0) summed over x and y, weighted per keypoint and divided by
    the number of supervised keypoints.

    Args:
        coords, target: (B, K, 2) crop-normalised (x, y).
        weights: (B, K) in {0, 1}.
        beta: smooth-L1 beta in crop-normalised units (0.01 ~ 2 px of a 192-px-wide crop).
    """
    per_keypoint = F.smooth_l1_loss(coords, target, reduction="none", beta=beta).sum(-1)
    return (per_keypoint * weights).sum() / weights.sum().clamp(min=1)


def score_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the (B, K) confidence logits against the (B, K) target weights
    (labelled and inside the crop), mean over B K."""
    loss = F.binary_cross_entropy_with_logits(logits, weights, reduction="sum")
    return loss / max(logits.numel(), 1)
