"""Non-maximum suppression of predicted poses by object keypoint similarity (OKS-NMS). N poses of
one image, K keypoints.

Top-down pipelines get duplicate poses when the detector boxes one person twice; OKS-NMS keeps
the highest-scoring of each group of near-identical poses (SimpleBaseline, Xiao et al. 2018,
``nms/nms.py``; mmpose ``oks_nms``; the seed thesis uses threshold 0.9).
"""

from typing import Sequence

import torch
from torch import Tensor

from .oks import keypoint_similarity

__all__ = ["pairwise_oks", "oks_nms"]


def pairwise_oks(keypoints: Tensor, areas: Tensor, sigmas: Sequence[float]) -> Tensor:
    """(N, N) symmetric OKS between every two of the (N, K, 2 or 3) poses (x, y in pixels; a
    score column is ignored, every keypoint counts), with scale rule "mean" of the (N,) areas in
    pixels^2 (SimpleBaseline's ``oks_iou``); 1 on the diagonal. sigmas: K OKS sigmas."""
    if keypoints.ndim != 3 or keypoints.shape[1] != len(sigmas) or keypoints.shape[2] < 2:
        raise ValueError(f"keypoints must be (N, {len(sigmas)}, 2 or 3), got shape {tuple(keypoints.shape)}")
    if areas.shape != (len(keypoints),):
        raise ValueError(f"areas must be ({len(keypoints)},), got shape {tuple(areas.shape)}")
    xy = keypoints[..., :2]
    return keypoint_similarity(xy[:, None], xy[None], areas[None], sigmas, "mean", areas[:, None]).mean(-1)


def oks_nms(keypoints: Tensor, scores: Tensor, areas: Tensor, sigmas: Sequence[float], thresh: float) -> Tensor:
    """Greedy OKS-NMS: visits the poses by decreasing (N,) ``scores`` and drops each whose
    :func:`pairwise_oks` with an already kept pose is above ``thresh`` in [0, 1]. Returns the
    (M,) int64 indices of the kept poses, by decreasing score."""
    if not 0.0 <= thresh <= 1.0:
        raise ValueError(f"OKS-NMS threshold must be in [0, 1], got {thresh}")
    order = torch.argsort(scores, descending=True, stable=True)
    oks = pairwise_oks(keypoints, areas, sigmas)[order][:, order].cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= oks[i] > thresh
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]
