# Multi-scale deformable attention module, from Deformable DETR (Zhu et al., "Deformable DETR:
# Deformable Transformers for End-to-End Object Detection", ICLR 2021), models/ops/modules/
# ms_deform_attn.py (Apache-2.0, Copyright (c) 2020 SenseTime), itself modified from
# https://github.com/chengdazhi/Deformable-Convolution-V2-PyTorch/tree/pytorch_1.0.0.
"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable DETR."""

import contextlib
import math
from typing import ContextManager, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ms_deform_attn_op import ms_deform_attn

__all__ = ["MSDeformAttn", "at_least_float32", "autocast_off", "autocast_to", "mixed_precision_msda_inputs"]


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is float16 or bfloat16, else unchanged (float32, float64, integers)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def autocast_off(t: Tensor) -> torch.autocast:
    """A region with autocast off on ``t``'s device type: what runs in it on float32 inputs stays
    float32 under a lower autocast precision (e.g. reference points, whose bfloat16 rounding is
    ~0.5 px on a 288-pixel-wide crop)."""
    return torch.autocast(t.device.type, enabled=False)


def autocast_to(device_type: str, dtype: torch.dtype) -> ContextManager:
    """``torch.autocast`` to ``dtype`` on ``device_type``; for float32 no context at all, so that
    any autocast of the caller's stays in force."""
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type, dtype=dtype)


def mixed_precision_msda_inputs(
    value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gives value (N, S, M, D), sampling_locations (N, Lq, M, L, P, 2) and attention_weights
    (N, Lq, M, L, P) the one dtype :func:`ms_deform_attn` takes; unchanged if they share one.

    Under autocast ``value_proj`` gives float16/bfloat16 and the locations and weights stay float32.
    A float16 value casts them to float16: float16's spacing on the normalised [0, 1] locations
    (<= 2^-11) is <= 0.018 pixels of the widest level of a 384x288 crop. Any other mix (bfloat16,
    whose 2^-8 would be 0.14 pixels there) casts all three to the widest dtype (float32 under autocast).
    """
    dtypes = {value.dtype, sampling_locations.dtype, attention_weights.dtype}
    if len(dtypes) == 1:
        return value, sampling_locations, attention_weights
    if value.dtype == torch.float16:
        dtype = torch.float16
    else:
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    return value.to(dtype), sampling_locations.to(dtype), attention_weights.to(dtype)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, eq. 5).

    Each query attends, per head, to ``n_points`` locations on each of ``n_levels`` feature maps,
    placed by offsets (predicted from the query) around its reference point and weighted by
    attention weights (predicted from the query, softmax over levels x points).

    Letters: N batch, Lq queries, S = sum_l H_l * W_l value tokens, C = d_model, L = n_levels,
    M = n_heads, P = n_points.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        """
        Args:
            d_model: C, the channels of queries, values and output.
            n_levels: L, the number of feature levels.
            n_heads: M, the number of attention heads; must divide d_model.
            n_points: P, the sampling points per head and level.
        """
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model must be divisible by n_heads, but got {d_model} and {n_heads}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: head m starts sampling along direction 2*pi*m/M,
        point p at distance p+1 (in pixels of each level), with uniform attention weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        # (M, 2) unit directions, scaled so that the larger coordinate is +-1
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = grid_init / grid_init.abs().max(-1, keepdim=True)[0]
        # (M, L, P, 2), point p at (p + 1) times the direction
        grid_init = grid_init.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid_init *= torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid_init.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.constant_(projection.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1], (0, 0) top-left and
                (1, 1) bottom-right, padded area included; or (N, Lq, L, 4) boxes (cx, cy, w, h)
                in the same frame.
            input_flatten: (N, S, C), the L maps flattened row-major and concatenated.
            input_spatial_shapes: (L, 2) int64 rows (H_l, W_l).
            input_level_start_index: (L,) int64 exclusive cumsum of H_l * W_l.
            input_padding_mask: (N, S) bool, True at padding tokens (their values are zeroed);
                or None.

        Returns:
            (N, Lq, C).
        """
        N, Lq, _ = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if tuple(input_spatial_shapes.shape) != (L, 2):
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes must be (n_levels, 2) = ({L}, 2), "
                f"got shape {tuple(input_spatial_shapes.shape)}"
            )
        if tuple(reference_points.shape[:-1]) != (N, Lq, L):
            raise ValueError(
                f"MSDeformAttn: reference_points must be (N, Lq, n_levels, 2 or 4) = ({N}, {Lq}, {L}, 2 or 4) "
                f"as query and n_levels give them, got shape {tuple(reference_points.shape)}"
            )
        # Under autocast the projections run in float16/bfloat16; the sampling locations and the
        # softmax are formed in float32 (bfloat16 would place them 0.14 px apart on a 384x288 crop).
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)
        # (N, Lq, M, L, P, 2), in pixels of each level
        sampling_offsets = at_least_float32(self.sampling_offsets(query)).view(N, Lq, M, L, P, 2)
        # softmax over L * P
        logits = at_least_float32(self.attention_weights(query)).view(N, Lq, M, L * P)
        attention_weights = F.softmax(logits, -1).view(N, Lq, M, L, P)
        reference_points = at_least_float32(reference_points)
        if reference_points.shape[-1] == 2:
            # offsets in pixels / (W_l, H_l). Operands of one dtype that broadcast only over their
            # leading dims: an int64 divisor or an interleaved broadcast (reference_points[:, :,
            # None, :, None, :]) made these two lines 10x slower.
            offset_normalizer = input_spatial_shapes.flip(-1)[:, None, :].expand(L, P, 2).to(sampling_offsets.dtype)
            references = reference_points.repeat_interleave(P, dim=2).unflatten(2, (L, P)).unsqueeze(2)
            sampling_locations = sampling_offsets.div(offset_normalizer).add_(references)
        elif reference_points.shape[-1] == 4:
            # offsets in units of half the box size divided by P
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"Last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}")
        inputs = mixed_precision_msda_inputs(value, sampling_locations, attention_weights)
        output = ms_deform_attn(inputs[0], input_spatial_shapes, input_level_start_index, *inputs[1:])
        return self.output_proj(output)  # (N, Lq, M * (C / M)) -> (N, Lq, C)
