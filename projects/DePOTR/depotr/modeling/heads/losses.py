"""The keypoint losses and the one rule of which keypoints supervise a crop
(:func:`keypoint_target_weights`). B crops, K keypoints.

Normalisers are clamped to >= 1: a batch without supervised keypoints gives a zero loss that still
backpropagates. The masked losses give weight-0 keypoints an exactly zero gradient.
"""

from typing import Tuple

from torch import Tensor
from torch.nn import functional as F


def keypoint_target_weights(gt_keypoints: Tensor, crop_size: Tuple[int, int]) -> Tensor:
    """(B, K) float weights: 1 where the (B, K, 3) (x, y, v) ``gt_keypoints`` (continuous crop
    pixels) are labelled (v > 0) and inside the crop [0, W) x [0, H) of ``crop_size`` (H, W)."""
    height, width = crop_size
    x, y, v = gt_keypoints.unbind(-1)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return ((v > 0) & inside).to(gt_keypoints.dtype)


def joints_mse_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """SimpleBaseline's ``JointsMSELoss(use_target_weight=True)`` (Xiao et al. 2018): 0.5 x the
    mean over B K h w of weight x squared error. pred, target: (B, K, h, w); weights: (B, K)."""
    squared = (pred - target) ** 2 * weights[..., None, None]
    return 0.5 * squared.sum() / max(squared.numel(), 1)


def coordinate_loss(coords: Tensor, target: Tensor, weights: Tensor, beta: float) -> Tensor:
    """Smooth-L1 (L1 when ``beta`` is 0) of the (B, K, 2) crop-normalised (x, y) summed over x and
    y, weighted by the (B, K) weights and divided by their sum. beta: crop-normalised (0.01 ~ 2 px
    of a 192-px-wide crop)."""
    per_keypoint = F.smooth_l1_loss(coords, target, reduction="none", beta=beta).sum(-1)
    return (per_keypoint * weights).sum() / weights.sum().clamp(min=1)


def score_loss(logits: Tensor, weights: Tensor) -> Tensor:
    """Binary cross-entropy of the (B, K) confidence logits against the (B, K) target weights
    (labelled and inside the crop), mean over B K."""
    loss = F.binary_cross_entropy_with_logits(logits, weights, reduction="sum")
    return loss / max(logits.numel(), 1)
