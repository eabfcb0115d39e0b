"""SimpleBaseline's ``JointsMSELoss`` with target weights (Xiao et al. 2018)."""

import torch


def joints_mse_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """B crops, K keypoints, (h, w) heatmap. Returns 0.5 x the mean over crops, keypoints and
    pixels of weight x squared error, as ``JointsMSELoss(use_target_weight=True)``.

    The mean is over B K h w clamped to >= 1, so a batch without supervised keypoints (all
    weights 0, or B = 0) gives a zero loss that still backpropagates. A keypoint of weight 0
    gets an exactly zero gradient.

    Args:
        pred, target: (B, K, h, w) heatmaps.
        weights: (B, K) target weights in {0, 1}.
    """
    squared = (pred - target) ** 2 * weights[..., None, None]
    return 0.5 * squared.sum() / max(squared.numel(), 1)
