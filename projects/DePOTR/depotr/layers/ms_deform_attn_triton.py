# Triton kernels of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021,
# eq. 5). The bilinear arithmetic and the non-finite rule are those of the C++/CUDA kernels
# (csrc/ms_deform_attn/ms_deform_attn_bilinear.h, after Deformable DETR's ms_deform_im2col_cuda.cuh,
# Apache-2.0, Copyright (c) 2020 SenseTime).
"""Triton forward and backward kernels of ``ms_deform_attn``: the ``"triton"`` backend.

Letters: N batch, S value tokens (all levels), M heads, D channels per head, L levels,
P sampling points per level and head, Lq queries; a row is one (n, query, head) triple.

A program serves ``BLOCK_R`` rows and all D channels (``BLOCK_D``, the next power of two): per level
and point it gathers the four corner values as (BLOCK_R, BLOCK_D) tiles and accumulates in float32
(float64 for float64 inputs). Backward writes each (row, level, point) gradient of the locations and
weights from one program, and scatters ``grad_value`` with ``tl.atomic_add`` into a float32 (float64)
buffer cast to the input dtype at the end, as the CUDA kernel does. Non-finite inputs follow the
reference as the C++ kernels do: a NaN or +-inf location samples NaN; a finite location outside the
map samples 0, so its weight contributes ``attn * 0``; inside the map IEEE arithmetic propagates them.

The kernels run on CUDA tensors (float16, bfloat16, float32, float64); with ``TRITON_INTERPRET=1`` set
before this module is imported, on CPU tensors under Triton's interpreter (numpy: no bfloat16), which
is how CI tests them without a GPU.
"""

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["INTERPRETED", "ms_deform_attn_triton_backward", "ms_deform_attn_triton_forward"]

# Whether triton.jit gave interpreted kernels (TRITON_INTERPRET=1 when this module was imported).
INTERPRETED = bool(triton.knobs.runtime.interpret)

_NAN = tl.constexpr(float("nan"))
_INF = tl.constexpr(float("inf"))
# Elements of a program's (BLOCK_R, BLOCK_D) tile; 2048 = 64 rows of D = 32 channels, 16 per thread
# with 4 warps.
_TILE_ELEMENTS = 2048


@triton.jit
def _program_rows(rows, LqM, S, M, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's rows (n, q, m) and channels: (row, row_mask) (BLOCK_R,), (channels,
    channel_mask) (BLOCK_D,), base (BLOCK_R,) such that value[n, token, m, :] starts at
    base + token * M * D, and M * D."""
    row = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    channels = tl.arange(0, BLOCK_D)
    MD = M * D
    base = (row // LqM) * S * MD + (row % M) * D
    return row, row < rows, channels, channels < D, base, MD


@triton.jit
def _level(shapes_ptr, starts_ptr, level):
    """(H_l, W_l, first token of level l = ``level``)."""
    return tl.load(shapes_ptr + 2 * level), tl.load(shapes_ptr + 2 * level + 1), tl.load(starts_ptr + level)


@triton.jit
def _sample_point(loc_ptr, attn_ptr, j, row_mask, H, W, ACC: tl.constexpr):
    """Location and weight of sample j (per row: index into the (..., L*P) flattening) and its
    bilinear set-up: (attn, finite, inside, h_low, w_low, lh, lw), each of shape (BLOCK_R,);
    ``inside`` is False for the rows outside ``row_mask``."""
    x = tl.load(loc_ptr + 2 * j, mask=row_mask, other=0.0).to(ACC)
    y = tl.load(loc_ptr + 2 * j + 1, mask=row_mask, other=0.0).to(ACC)
    attn = tl.load(attn_ptr + j, mask=row_mask, other=0.0).to(ACC)
    finite = (tl.abs(x) < _INF) & (tl.abs(y) < _INF)
    # Pixel coordinates (centres at +0.5); non-finite locations are replaced by 0 so that the
    # integer conversions below stay defined (their samples are NaN whatever the corners).
    w_im = tl.where(finite, x, 0.0) * W.to(ACC) - 0.5
    h_im = tl.where(finite, y, 0.0) * H.to(ACC) - 0.5
    # A padding row of the last program (row_mask False) reads its location as (0, 0), a point
    # inside the map: it must not count as inside, or its corners would address value and
    # grad_value past their ends (its row and batch index lie beyond the tensors).
    inside = row_mask & finite & (h_im >= -1.0) & (w_im >= -1.0) & (h_im < H.to(ACC)) & (w_im < W.to(ACC))
    h_im = tl.where(inside, h_im, 0.0)
    w_im = tl.where(inside, w_im, 0.0)
    h_floor = tl.floor(h_im)
    w_floor = tl.floor(w_im)
    return attn, finite, inside, h_floor.to(tl.int64), w_floor.to(tl.int64), h_im - h_floor, w_im - w_floor


@triton.jit
def _corner_offsets(inside, h, w, H, W, start, MD):
    """(token offset h * W + w of level start `start`, times M*D; whether the corner (h, w) is
    in the map), each (BLOCK_R,)."""
    valid = inside & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    return (start + h * W + w) * MD, valid


@triton.jit
def _load_corner(value_ptr, base, offset, valid, channels, channel_mask, ACC: tl.constexpr):
    """The (BLOCK_R, BLOCK_D) corner values, 0 where the corner lies outside the map."""
    pointers = value_ptr + (base + offset)[:, None] + channels[None, :]
    mask = valid[:, None] & channel_mask[None, :]
    return tl.load(pointers, mask=mask, other=0.0).to(ACC)


@triton.jit
def _forward_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    out_ptr,
    rows,
    LqM,
    S,
    M,
    D,
    L,
    P,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    row, row_mask, channels, channel_mask, base, MD = _program_rows(rows, LqM, S, M, D, BLOCK_R, BLOCK_D)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=ACC)
    for level in range(L):
        H, W, start = _level(shapes_ptr, starts_ptr, level)
        for p in range(P):
            j = row * (L * P) + (level * P + p)
            attn, finite, inside, h0, w0, lh, lw = _sample_point(loc_ptr, attn_ptr, j, row_mask, H, W, ACC)
            hh = 1.0 - lh
            hw = 1.0 - lw
            o, ok = _corner_offsets(inside, h0, w0, H, W, start, MD)
            sample = (hh * hw)[:, None] * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC)
            o, ok = _corner_offsets(inside, h0, w0 + 1, H, W, start, MD)
            sample += (hh * lw)[:, None] * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC)
            o, ok = _corner_offsets(inside, h0 + 1, w0, H, W, start, MD)
            sample += (lh * hw)[:, None] * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC)
            o, ok = _corner_offsets(inside, h0 + 1, w0 + 1, H, W, start, MD)
            sample += (lh * lw)[:, None] * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC)
            # Outside the map the sample is 0 (attn * 0: NaN for a non-finite attn); at a
            # non-finite location it is NaN.
            sample = tl.where(finite[:, None], sample, _NAN)
            acc += attn[:, None] * sample
    out_pointers = out_ptr + row[:, None] * D + channels[None, :]
    tl.store(out_pointers, acc, mask=row_mask[:, None] & channel_mask[None, :])


@triton.jit
def _scatter_corner(grad_value_ptr, base, offset, valid, channels, channel_mask, coef, g):
    """grad_value[corner] += coef * g over the channels (atomics: rows share tokens)."""
    pointers = grad_value_ptr + (base + offset)[:, None] + channels[None, :]
    mask = valid[:, None] & channel_mask[None, :]
    tl.atomic_add(pointers, coef[:, None] * g, mask=mask, sem="relaxed")


@triton.jit
def _backward_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    grad_out_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_attn_ptr,
    rows,
    LqM,
    S,
    M,
    D,
    L,
    P,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ACC: tl.constexpr,
):
    row, row_mask, channels, channel_mask, base, MD = _program_rows(rows, LqM, S, M, D, BLOCK_R, BLOCK_D)
    g_pointers = grad_out_ptr + row[:, None] * D + channels[None, :]
    g = tl.load(g_pointers, mask=row_mask[:, None] & channel_mask[None, :], other=0.0).to(ACC)
    for level in range(L):
        H, W, start = _level(shapes_ptr, starts_ptr, level)
        for p in range(P):
            j = row * (L * P) + (level * P + p)
            attn, finite, inside, h0, w0, lh, lw = _sample_point(loc_ptr, attn_ptr, j, row_mask, H, W, ACC)
            hh = 1.0 - lh
            hw = 1.0 - lw
            # dot_k = <grad_output row, corner k>, and grad_value[corner k] += attn * w_k * g
            o, ok = _corner_offsets(inside, h0, w0, H, W, start, MD)
            dot0 = tl.sum(g * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC), axis=1)
            _scatter_corner(grad_value_ptr, base, o, ok, channels, channel_mask, attn * hh * hw, g)
            o, ok = _corner_offsets(inside, h0, w0 + 1, H, W, start, MD)
            dot1 = tl.sum(g * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC), axis=1)
            _scatter_corner(grad_value_ptr, base, o, ok, channels, channel_mask, attn * hh * lw, g)
            o, ok = _corner_offsets(inside, h0 + 1, w0, H, W, start, MD)
            dot2 = tl.sum(g * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC), axis=1)
            _scatter_corner(grad_value_ptr, base, o, ok, channels, channel_mask, attn * lh * hw, g)
            o, ok = _corner_offsets(inside, h0 + 1, w0 + 1, H, W, start, MD)
            dot3 = tl.sum(g * _load_corner(value_ptr, base, o, ok, channels, channel_mask, ACC), axis=1)
            _scatter_corner(grad_value_ptr, base, o, ok, channels, channel_mask, attn * lh * lw, g)
            grad_attn = hh * hw * dot0 + hh * lw * dot1 + lh * hw * dot2 + lh * lw * dot3
            grad_x = attn * W.to(ACC) * (hh * (dot1 - dot0) + lh * (dot3 - dot2))
            grad_y = attn * H.to(ACC) * (hw * (dot2 - dot0) + lw * (dot3 - dot1))
            # A point reading no pixel: (0, attn * 0, attn * 0) outside the map, NaN for a
            # non-finite location (bilinear_sample_backward / no_pixel_backward in C++).
            no_pixel = attn * 0.0
            grad_attn = tl.where(finite, tl.where(inside, grad_attn, 0.0), _NAN)
            grad_x = tl.where(finite, tl.where(inside, grad_x, no_pixel), _NAN)
            grad_y = tl.where(finite, tl.where(inside, grad_y, no_pixel), _NAN)
            tl.store(grad_attn_ptr + j, grad_attn, mask=row_mask)
            tl.store(grad_loc_ptr + 2 * j, grad_x, mask=row_mask)
            tl.store(grad_loc_ptr + 2 * j + 1, grad_y, mask=row_mask)


def _launch(value: Tensor, sampling_locations: Tensor) -> tuple[tuple[int], tuple[int, ...], dict]:
    """(grid, sizes (rows, LqM, S, M, D, L, P), constexprs) of the kernels for one problem."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    block_d = triton.next_power_of_2(D)
    block_r = max(1, _TILE_ELEMENTS // block_d)
    acc = tl.float64 if value.dtype == torch.float64 else tl.float32
    grid = (triton.cdiv(N * Lq * M, block_r),)
    return grid, (N * Lq * M, Lq * M, S, M, D, L, P), {"BLOCK_R": block_r, "BLOCK_D": block_d, "ACC": acc}


def _on_device(value: Tensor) -> contextlib.AbstractContextManager:
    """value's CUDA device made the current one (Triton launches on the current device, whatever
    the tensors' device: a tensor on cuda:1 with cuda:0 current would be addressed from cuda:0);
    nothing for CPU tensors (the interpreter)."""
    return torch.cuda.device(value.device) if value.is_cuda else contextlib.nullcontext()


def ms_deform_attn_triton_forward(*inputs: Tensor) -> Tensor:
    """Forward of ``ms_deform_attn`` on its five arguments (shapes and conventions there, validated
    by it): value (N, S, M, D), spatial_shapes (L, 2), level_start_index (L,), sampling_locations
    (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P). Returns (N, Lq, M * D) in value's dtype."""
    value, _, _, sampling_locations, _ = inputs
    grid, sizes, constexprs = _launch(value, sampling_locations)
    output = value.new_empty((*sampling_locations.shape[:2], value.shape[2] * value.shape[3]))
    if sizes[0] > 0:
        with _on_device(value):
            _forward_kernel[grid](*(t.contiguous() for t in inputs), output, *sizes, **constexprs)
    return output


def ms_deform_attn_triton_backward(*inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of ``ms_deform_attn``: the five arguments of the forward, then grad_output (N, Lq, M * D).
    Returns (grad_value (N, S, M, D), grad_sampling_locations (N, Lq, M, L, P, 2),
    grad_attention_weights (N, Lq, M, L, P)), in value's dtype."""
    value, _, _, sampling_locations, attention_weights, _ = inputs
    grid, sizes, constexprs = _launch(value, sampling_locations)
    # float16 / bfloat16: the many small atomic additions go to a float32 buffer.
    buffer_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    grad_value = torch.zeros(value.shape, dtype=buffer_dtype, device=value.device)
    grad_sampling_locations = torch.empty_like(sampling_locations, memory_format=torch.contiguous_format)
    grad_attention_weights = torch.empty_like(attention_weights, memory_format=torch.contiguous_format)
    if sizes[0] > 0:
        grads = (grad_value, grad_sampling_locations, grad_attention_weights)
        with _on_device(value):
            _backward_kernel[grid](*(t.contiguous() for t in inputs), *grads, *sizes, **constexprs)
    return grad_value.to(value.dtype), grad_sampling_locations, grad_attention_weights
