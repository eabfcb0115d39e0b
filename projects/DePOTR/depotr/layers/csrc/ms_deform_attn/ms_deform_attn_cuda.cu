// CUDA kernels of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021).
// Adapted from Deformable DETR's ms_deform_im2col_cuda.cuh (Apache-2.0, Copyright (c) 2020
// SenseTime): same bilinear arithmetic, without the im2col_step batching.
//
// One warp per (n, query, head) row; its lanes stride over the D channels, so loads and stores
// of value, output and grad_value are coalesced (D = 32 maps one channel to each lane). Values
// are accumulated in at::opmath_type (float for float16/bfloat16). In backward each lane keeps
// partial dot products <grad_output, corner value> over its channels; a warp shuffle reduces them
// into the location and attention-weight gradients. grad_value is scattered with atomicAdd into an
// opmath buffer: float and double add natively; for float16/bfloat16 the float32 staging buffer
// keeps the many small additions exact to fp32 and is cast to the input dtype at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h> // at::cuda::getCurrentCUDAStream, without cuBLAS/cuSPARSE headers

#include <limits>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_bilinear.h"

namespace depotr {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;
constexpr int kRowsPerBlock = kThreadsPerBlock / kWarpSize;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Problem sizes passed by value to the kernels.
struct Sizes {
  int64_t rows; // N * Lq * M
  int64_t Lq, S, M, D, L, P;
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock) ms_deform_attn_forward_kernel(
    const Sizes sz,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const scalar_t* __restrict__ sampling_locations,
    const scalar_t* __restrict__ attention_weights,
    scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= sz.rows) {
    return; // whole warps only: row is uniform within a warp
  }
  const int lane = threadIdx.x % kWarpSize;
  const int64_t m = row % sz.M;
  const int64_t n = row / (sz.Lq * sz.M);
  const int64_t token_stride = sz.M * sz.D;
  const scalar_t* value_nm = value + (n * sz.S * sz.M + m) * sz.D;
  const scalar_t* loc = sampling_locations + row * sz.L * sz.P * 2;
  const scalar_t* attn = attention_weights + row * sz.L * sz.P;
  for (int64_t c = lane; c < sz.D; c += kWarpSize) {
    acc_t acc = 0;
    for (int64_t l = 0; l < sz.L; ++l) {
      const int64_t H = spatial_shapes[2 * l];
      const int64_t W = spatial_shapes[2 * l + 1];
      const scalar_t* value_l = value_nm + level_start_index[l] * token_stride + c;
      for (int64_t p = 0; p < sz.P; ++p) {
        const int64_t j = l * sz.P + p;
        BilinearSample<acc_t> s;
        const SampleKind kind =
            bilinear_sample(static_cast<acc_t>(loc[2 * j]), static_cast<acc_t>(loc[2 * j + 1]), H, W, &s);
        if (kind != SampleKind::kInside) {
          acc += no_pixel_contribution(kind, static_cast<acc_t>(attn[j])); // 0 or NaN
          continue;
        }
        acc_t sampled = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (s.index[k] >= 0) {
            sampled += s.weight[k] * static_cast<acc_t>(value_l[s.index[k] * token_stride]);
          }
        }
        acc += static_cast<acc_t>(attn[j]) * sampled;
      }
    }
    output[row * sz.D + c] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock) ms_deform_attn_backward_kernel(
    const Sizes sz,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const scalar_t* __restrict__ sampling_locations,
    const scalar_t* __restrict__ attention_weights,
    const scalar_t* __restrict__ grad_output,
    at::opmath_type<scalar_t>* __restrict__ grad_value,
    scalar_t* __restrict__ grad_sampling_locations,
    scalar_t* __restrict__ grad_attention_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= sz.rows) {
    return; // whole warps only, so the shuffles below see all 32 lanes
  }
  const int lane = threadIdx.x % kWarpSize;
  const int64_t m = row % sz.M;
  const int64_t n = row / (sz.Lq * sz.M);
  const int64_t token_stride = sz.M * sz.D;
  const int64_t value_offset = (n * sz.S * sz.M + m) * sz.D;
  const scalar_t* g = grad_output + row * sz.D;
  const scalar_t* loc = sampling_locations + row * sz.L * sz.P * 2;
  const scalar_t* attn = attention_weights + row * sz.L * sz.P;
  scalar_t* grad_loc = grad_sampling_locations + row * sz.L * sz.P * 2;
  scalar_t* grad_attn = grad_attention_weights + row * sz.L * sz.P;
  for (int64_t l = 0; l < sz.L; ++l) {
    const int64_t H = spatial_shapes[2 * l];
    const int64_t W = spatial_shapes[2 * l + 1];
    const int64_t level_offset = value_offset + level_start_index[l] * token_stride;
    for (int64_t p = 0; p < sz.P; ++p) {
      const int64_t j = l * sz.P + p;
      BilinearSample<acc_t> s;
      const SampleKind kind =
          bilinear_sample(static_cast<acc_t>(loc[2 * j]), static_cast<acc_t>(loc[2 * j + 1]), H, W, &s);
      const acc_t a = static_cast<acc_t>(attn[j]);
      if (kind != SampleKind::kInside) {
        if (lane == 0) {
          acc_t ga, gx, gy;
          no_pixel_backward(kind, a, &ga, &gx, &gy);
          grad_attn[j] = static_cast<scalar_t>(ga);
          grad_loc[2 * j] = static_cast<scalar_t>(gx);
          grad_loc[2 * j + 1] = static_cast<scalar_t>(gy);
        }
        continue;
      }
      acc_t dot[4] = {0, 0, 0, 0};
      for (int64_t c = lane; c < sz.D; c += kWarpSize) {
        const acc_t gc = static_cast<acc_t>(g[c]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (s.index[k] >= 0) {
            const int64_t offset = level_offset + s.index[k] * token_stride + c;
            dot[k] += gc * static_cast<acc_t>(value[offset]);
            atomicAdd(grad_value + offset, a * s.weight[k] * gc);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        dot[k] = warp_sum(dot[k]);
      }
      if (lane == 0) {
        acc_t ga, gx, gy;
        bilinear_sample_backward(s, dot, a, H, W, &ga, &gx, &gy);
        grad_attn[j] = static_cast<scalar_t>(ga);
        grad_loc[2 * j] = static_cast<scalar_t>(gx);
        grad_loc[2 * j + 1] = static_cast<scalar_t>(gy);
      }
    }
  }
}

void check_cuda_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn_cuda: expected CUDA tensors, got ", value.device());
}

// Contiguous inputs and the launch configuration; call under a guard for value's device.
struct Prepared {
  at::Tensor value, spatial_shapes, level_start_index, sampling_locations, attention_weights;
  Sizes sizes;
  unsigned int blocks;
};

Prepared prepare(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const Sizes sz{
      value.size(0) * sampling_locations.size(1) * value.size(2),
      sampling_locations.size(1),
      value.size(1),
      value.size(2),
      value.size(3),
      sampling_locations.size(3),
      sampling_locations.size(4)};
  const int64_t blocks = (sz.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  TORCH_CHECK(
      blocks <= std::numeric_limits<int32_t>::max(),
      "ms_deform_attn_cuda: N * Lq * M = ",
      sz.rows,
      " rows exceed the grid limit");
  return Prepared{
      value.contiguous(),
      spatial_shapes.contiguous(),
      level_start_index.contiguous(),
      sampling_locations.contiguous(),
      attention_weights.contiguous(),
      sz,
      static_cast<unsigned int>(blocks)};
}

} // namespace

at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_cuda_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Prepared prep = prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& sz = prep.sizes;
  at::Tensor output = at::empty({value.size(0), sz.Lq, sz.M * sz.D}, value.options());
  if (sz.rows == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
        ms_deform_attn_forward_kernel<scalar_t>
            <<<prep.blocks, kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
                sz,
                prep.value.const_data_ptr<scalar_t>(),
                prep.spatial_shapes.const_data_ptr<int64_t>(),
                prep.level_start_index.const_data_ptr<int64_t>(),
                prep.sampling_locations.const_data_ptr<scalar_t>(),
                prep.attention_weights.const_data_ptr<scalar_t>(),
                output.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_cuda_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_ms_deform_attn_grad_output(value, sampling_locations, grad_output);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Prepared prep = prepare(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Sizes& sz = prep.sizes;
  const at::Tensor grad_output_c = grad_output.contiguous();
  const at::ScalarType opmath_dtype = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(prep.value.sizes(), value.options().dtype(opmath_dtype));
  at::Tensor grad_sampling_locations = at::empty_like(prep.sampling_locations);
  at::Tensor grad_attention_weights = at::empty_like(prep.attention_weights);
  if (sz.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          ms_deform_attn_backward_kernel<scalar_t>
              <<<prep.blocks, kThreadsPerBlock, 0, at::cuda::getCurrentCUDAStream()>>>(
                  sz,
                  prep.value.const_data_ptr<scalar_t>(),
                  prep.spatial_shapes.const_data_ptr<int64_t>(),
                  prep.level_start_index.const_data_ptr<int64_t>(),
                  prep.sampling_locations.const_data_ptr<scalar_t>(),
                  prep.attention_weights.const_data_ptr<scalar_t>(),
                  grad_output_c.const_data_ptr<scalar_t>(),
                  grad_value.mutable_data_ptr<at::opmath_type<scalar_t>>(),
                  grad_sampling_locations.mutable_data_ptr<scalar_t>(),
                  grad_attention_weights.mutable_data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value.to(value.scalar_type()), grad_sampling_locations, grad_attention_weights};
}

} // namespace depotr
