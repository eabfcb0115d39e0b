// Multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021, eq. 5).
// Adapted from Deformable DETR's ms_deform_attn ops (Apache-2.0, Copyright (c) 2020 SenseTime).
//
// Shapes (all tensors on one device; inputs need not be contiguous):
//   value               (N, S, M, D)        N batch, S = sum_l H_l * W_l tokens, M heads, D channels
//   spatial_shapes      (L, 2) int64         (H_l, W_l) per level
//   level_start_index   (L,) int64           exclusive cumsum of H_l * W_l: first token of level l
//   sampling_locations  (N, Lq, M, L, P, 2)  (x, y) in [0, 1], align_corners=False convention
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M * D)
// The Python wrapper validates the arguments; the kernels only check what they rely on.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace depotr {

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// Returns (grad_value, grad_sampling_locations, grad_attention_weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output);
#endif

// Checks shared by the CPU and CUDA entry points: ranks, sizes, dtypes, one device; the Python
// wrapper gives the user-facing errors. The CPU kernel also checks the levels' layout (H x W per
// level against S and level_start_index); the CUDA kernel does not (it would need a device-to-host
// copy per call), so a direct torch.ops call on CUDA, or a compiled graph (where the wrapper skips
// its layout check), must pass consistent spatial_shapes and level_start_index.
void check_ms_deform_attn_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// grad_output must be (N, Lq, M * D) with value's dtype and device.
void check_ms_deform_attn_grad_output(
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& grad_output);

} // namespace depotr
