# Multi-scale deformable attention in pure PyTorch, after Deformable DETR's
# ms_deform_attn_core_pytorch (Zhu et al., ICLR 2021; Apache-2.0, Copyright (c) 2020 SenseTime)
# and detrex's multi_scale_deformable_attn_pytorch.
"""Pure-PyTorch multi-scale deformable attention: the ground truth for tests and the fallback
when no compiled kernel serves a device."""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ms_deform_attn_reference"]


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with one ``F.grid_sample`` per level: bilinear, zero padding,
    ``align_corners=False`` (pixel coordinate ``x * W_l - 0.5``). No validation; reads spatial_shapes
    and level_start_index on the host.

    Shapes as in :func:`depotr.layers.ms_deform_attn`: value (N, S, M, D), spatial_shapes (L, 2) int64
    rows (H_l, W_l), level_start_index (L,) int64 exclusive cumsum of H_l * W_l, sampling_locations
    (N, Lq, M, L, P, 2) as (x, y) in [0, 1], attention_weights (N, Lq, M, L, P). Returns (N, Lq, M * D).
    """
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    # (N, Lq, M, L, P, 2) in [0, 1] -> in [-1, 1], grid_sample's convention
    sampling_grids = 2 * sampling_locations - 1
    sampled_per_level = []
    for level, ((H, W), start) in enumerate(zip(spatial_shapes.tolist(), level_start_index.tolist())):
        # (N, H*W, M, D) -> (N, M, D, H*W) -> (N*M, D, H, W)
        value_l = value[:, start : start + H * W].permute(0, 2, 3, 1).reshape(N * M, D, H, W)
        # (N, Lq, M, P, 2) -> (N, M, Lq, P, 2) -> (N*M, Lq, P, 2)
        grid_l = sampling_grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P), bilinear
        sampled_per_level.append(F.grid_sample(value_l, grid_l, padding_mode="zeros", align_corners=False))
    # (N, Lq, M, L, P) -> (N, M, Lq, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    # L x (N*M, D, Lq, P) -> (N*M, D, Lq, L, P) -> (N*M, D, Lq, L*P) -> (N*M, D, Lq) -> (N, M*D, Lq)
    output = (torch.stack(sampled_per_level, dim=-2).flatten(-2) * weights).sum(-1).view(N, M * D, Lq)
    # (N, Lq, M*D)
    return output.transpose(1, 2).contiguous()
