"""COCO object keypoint similarity (OKS), the one implementation, with the scale rule a parameter.
K keypoints; ``...`` any broadcastable batch shape.

COCOeval's formula (``pycocotools.cocoeval.COCOeval.computeOks``):
ks_k = exp(-d_k^2 / (2 (s^2 + eps) (2 sigma_k)^2)), d_k the distance between the two k-th
keypoints, sigma_k the keypoint's OKS sigma, eps the dtype's machine epsilon (pycocotools'
``np.spacing(1)``). The scale s^2 is one of ``OKS_SCALE_RULES``: ``"target"``, the target's area
(COCOeval; the error analysis), or ``"mean"``, the mean of the two areas (SimpleBaseline's
``oks_iou``; OKS-NMS).
"""

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["OKS_SCALE_RULES", "keypoint_similarity"]

OKS_SCALE_RULES = ("target", "mean")


def keypoint_similarity(
    pred: Tensor,
    target: Tensor,
    target_areas: Tensor,
    sigmas: Union[Sequence[float], Tensor],
    scale_rule: str = "target",
    pred_areas: Optional[Tensor] = None,
) -> Tensor:
    """(..., K) per-keypoint OKS terms ks (module docstring) in (0, 1], ``pred``'s dtype; OKS is
    their mean over the keypoints counted. pred, target: (..., K, 2) broadcastable x, y in pixels;
    target_areas, pred_areas: (...) areas s^2 in pixels^2 (``pred_areas`` only for "mean");
    sigmas: (K,) OKS sigmas; scale_rule: one of ``OKS_SCALE_RULES``."""
    if scale_rule not in OKS_SCALE_RULES:
        raise ValueError(f"unknown OKS scale rule {scale_rule!r}; expected one of {OKS_SCALE_RULES}")
    if scale_rule == "mean" and pred_areas is None:
        raise ValueError('OKS scale rule "mean" needs pred_areas')
    dtype = pred.dtype
    sigmas = torch.as_tensor(sigmas, dtype=dtype, device=pred.device)
    if pred.shape[-1] != 2 or target.shape[-1] != 2 or len(sigmas) != pred.shape[-2] or len(sigmas) != target.shape[-2]:
        raise ValueError(
            f"pred and target must be (..., {len(sigmas)}, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    scales = target_areas.to(dtype) if scale_rule == "target" else (pred_areas.to(dtype) + target_areas.to(dtype)) / 2
    squared_distances = (pred - target).square().sum(-1)  # (..., K)
    variances = (2 * sigmas) ** 2  # (K,)
    return torch.exp(-squared_distances / (2 * variances * (scales[..., None] + torch.finfo(dtype).eps)))
