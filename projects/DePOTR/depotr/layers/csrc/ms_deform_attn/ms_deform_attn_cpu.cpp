// CPU kernels of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021).
// Deformable DETR ships CUDA only; this follows its CUDA kernels' arithmetic on the CPU.
//
// Forward parallelises over the N * Lq * M (batch, query, head) rows. Backward parallelises over
// the N * M (batch, head) pairs: each pair owns the slice grad_value[n, :, m, :], so the
// scattered adds need no atomics and the summation order is fixed (deterministic). Inner loops
// run over the D contiguous channels; bilinear weights and corner offsets are computed once per
// (row, level, point), outside them.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "ms_deform_attn/ms_deform_attn.h"
#include "ms_deform_attn/ms_deform_attn_bilinear.h"

// GCC >= 11 with glibc (ifunc) on x86-64 builds the hot loops twice, for AVX2 + FMA CPUs
// (x86-64-v3) and for any x86-64, and picks one when the library loads: ~1.7x the forward speed
// here without -march flags. The FMA copy may round differently in the last bit, so results are
// bit-identical between runs on one kind of CPU, not across CPUs with and without AVX2.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__GLIBC__)
#define DEPOTR_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DEPOTR_CPU_CLONES
#endif

namespace depotr {
namespace {

// out[c] += coef * v[c] for c < D.
template <typename scalar_t>
inline void axpy(scalar_t* __restrict__ out, scalar_t coef, const scalar_t* __restrict__ v, int64_t D) {
  for (int64_t c = 0; c < D; ++c) {
    out[c] += coef * v[c];
  }
}

// Returns sum_c g[c] * v[c] and adds coef * g[c] to grad_v[c]. Eight partial sums let the
// compiler vectorise the reduction without -ffast-math while keeping a fixed summation order.
template <typename scalar_t>
inline scalar_t dot_and_axpy(
    const scalar_t* __restrict__ v,
    const scalar_t* __restrict__ g,
    scalar_t* __restrict__ grad_v,
    scalar_t coef,
    int64_t D) {
  constexpr int64_t kLanes = 8;
  scalar_t partial[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= D; c += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      partial[k] += g[c + k] * v[c + k];
      grad_v[c + k] += coef * g[c + k];
    }
  }
  for (; c < D; ++c) {
    partial[0] += g[c] * v[c];
    grad_v[c] += coef * g[c];
  }
  scalar_t dot = 0;
  for (int64_t k = 0; k < kLanes; ++k) {
    dot += partial[k];
  }
  return dot;
}

// out[c] += attn * sample[c], the bilinear sample formed first: for a NaN or +-inf attn this
// gives what the reference gives (inf * sample), where adding attn * weight[k] * value corner by
// corner could give inf - inf = NaN. The fused per-corner axpy serves finite weights.
template <typename scalar_t>
void add_weighted_sample(
    scalar_t* out,
    scalar_t attn,
    const BilinearSample<scalar_t>& s,
    const scalar_t* value_l,
    int64_t token_stride,
    int64_t D) {
  for (int64_t c = 0; c < D; ++c) {
    scalar_t sample = 0;
    for (int k = 0; k < 4; ++k) {
      if (s.index[k] >= 0) {
        sample += s.weight[k] * value_l[s.index[k] * token_stride + c];
      }
    }
    out[c] += attn * sample;
  }
}

// Problem sizes and the level layout, read once per call.
struct Sizes {
  int64_t N, S, M, D, Lq, L, P;
  const int64_t* shapes; // (L, 2)
  const int64_t* starts; // (L,)
};

Sizes get_sizes(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations) {
  Sizes s{
      value.size(0),
      value.size(1),
      value.size(2),
      value.size(3),
      sampling_locations.size(1),
      sampling_locations.size(3),
      sampling_locations.size(4),
      spatial_shapes.data_ptr<int64_t>(),
      level_start_index.data_ptr<int64_t>()};
  // The kernels index value through these; keep every level inside the S tokens.
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t H = s.shapes[2 * l];
    const int64_t W = s.shapes[2 * l + 1];
    TORCH_CHECK(
        H >= 0 && W >= 0 && s.starts[l] >= 0 && s.starts[l] + H * W <= s.S,
        "ms_deform_attn: level ",
        l,
        " (H=",
        H,
        ", W=",
        W,
        ", start=",
        s.starts[l],
        ") does not fit in the S=",
        s.S,
        " tokens of value");
  }
  return s;
}

// Rows [begin, end) of the forward, out[row] = sum over levels and points of attn * sample. kD > 0
// fixes the channels per head at compile time (D = kD): the row then sums in a local array the
// compiler keeps in vector registers (15 % faster than adding into `output` point by point at D =
// 32); kD = 0 serves any D.
template <typename scalar_t, int64_t kD>
DEPOTR_CPU_CLONES void forward_rows(
    const Sizes& sz,
    const scalar_t* value,
    const scalar_t* sampling_locations,
    const scalar_t* attention_weights,
    scalar_t* output,
    int64_t begin,
    int64_t end) {
  const int64_t D = kD > 0 ? kD : sz.D;
  const int64_t token_stride = sz.M * D;
  scalar_t local[kD > 0 ? kD : 1];
  for (int64_t row = begin; row < end; ++row) {
    const int64_t m = row % sz.M;
    const int64_t n = row / (sz.Lq * sz.M);
    scalar_t* out = output + row * D;
    scalar_t* acc = kD > 0 ? local : out;
    std::fill(acc, acc + D, scalar_t(0));
    const scalar_t* value_nm = value + (n * sz.S * sz.M + m) * D;
    const scalar_t* loc = sampling_locations + row * sz.L * sz.P * 2;
    const scalar_t* attn = attention_weights + row * sz.L * sz.P;
    for (int64_t l = 0; l < sz.L; ++l) {
      const int64_t H = sz.shapes[2 * l];
      const int64_t W = sz.shapes[2 * l + 1];
      const scalar_t* value_l = value_nm + sz.starts[l] * token_stride;
      for (int64_t p = 0; p < sz.P; ++p) {
        const int64_t j = l * sz.P + p;
        BilinearSample<scalar_t> s;
        const SampleKind kind = bilinear_sample(loc[2 * j], loc[2 * j + 1], H, W, &s);
        if (kind != SampleKind::kInside) {
          // 0 or NaN for every channel; only NaN changes the output (and keeps it NaN)
          const scalar_t contribution = no_pixel_contribution(kind, attn[j]);
          if (std::isnan(contribution)) {
            std::fill(acc, acc + D, contribution);
          }
          continue;
        }
        if (std::isfinite(attn[j])) {
          for (int k = 0; k < 4; ++k) {
            if (s.index[k] >= 0) {
              axpy(acc, attn[j] * s.weight[k], value_l + s.index[k] * token_stride, D);
            }
          }
        } else {
          add_weighted_sample(acc, attn[j], s, value_l, token_stride, D);
        }
      }
    }
    if (kD > 0) {
      std::copy(acc, acc + D, out);
    }
  }
}

template <typename scalar_t>
void forward_kernel(
    const Sizes& sz,
    const scalar_t* value,
    const scalar_t* sampling_locations,
    const scalar_t* attention_weights,
    scalar_t* output) {
  const int64_t rows = sz.N * sz.Lq * sz.M;
  const int64_t work_per_row = std::max<int64_t>(1, sz.L * sz.P * 4 * sz.D);
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / work_per_row);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    // D = 256 / 8 heads (Deformable DETR, the COCO configs). A fixed D = 16 (the CPU configs' 128 / 8)
    // measured slower than the loop over any D.
    if (sz.D == 32) {
      forward_rows<scalar_t, 32>(sz, value, sampling_locations, attention_weights, output, begin, end);
    } else {
      forward_rows<scalar_t, 0>(sz, value, sampling_locations, attention_weights, output, begin, end);
    }
  });
}

// The (batch, head) pairs [begin, end) of the backward.
template <typename scalar_t>
DEPOTR_CPU_CLONES void backward_pairs(
    const Sizes& sz,
    const scalar_t* value,
    const scalar_t* sampling_locations,
    const scalar_t* attention_weights,
    const scalar_t* grad_output,
    scalar_t* grad_value,
    scalar_t* grad_sampling_locations,
    scalar_t* grad_attention_weights,
    int64_t begin,
    int64_t end) {
  const int64_t token_stride = sz.M * sz.D;
  for (int64_t nm = begin; nm < end; ++nm) {
    const int64_t n = nm / sz.M;
    const int64_t m = nm % sz.M;
    const int64_t value_offset = (n * sz.S * sz.M + m) * sz.D;
    // Zeroing the owned slice here rather than with at::zeros spreads the first touch of the
    // (often large) grad_value over the threads.
    for (int64_t t = 0; t < sz.S; ++t) {
      std::fill_n(grad_value + value_offset + t * token_stride, sz.D, scalar_t(0));
    }
    for (int64_t q = 0; q < sz.Lq; ++q) {
      const int64_t row = (n * sz.Lq + q) * sz.M + m;
      const scalar_t* g = grad_output + row * sz.D;
      const scalar_t* loc = sampling_locations + row * sz.L * sz.P * 2;
      const scalar_t* attn = attention_weights + row * sz.L * sz.P;
      scalar_t* grad_loc = grad_sampling_locations + row * sz.L * sz.P * 2;
      scalar_t* grad_attn = grad_attention_weights + row * sz.L * sz.P;
      for (int64_t l = 0; l < sz.L; ++l) {
        const int64_t H = sz.shapes[2 * l];
        const int64_t W = sz.shapes[2 * l + 1];
        const int64_t level_offset = value_offset + sz.starts[l] * token_stride;
        for (int64_t p = 0; p < sz.P; ++p) {
          const int64_t j = l * sz.P + p;
          BilinearSample<scalar_t> s;
          const SampleKind kind = bilinear_sample(loc[2 * j], loc[2 * j + 1], H, W, &s);
          if (kind != SampleKind::kInside) {
            no_pixel_backward(kind, attn[j], &grad_attn[j], &grad_loc[2 * j], &grad_loc[2 * j + 1]);
            continue;
          }
          scalar_t dot[4] = {};
          for (int k = 0; k < 4; ++k) {
            if (s.index[k] >= 0) {
              const int64_t offset = level_offset + s.index[k] * token_stride;
              dot[k] = dot_and_axpy(value + offset, g, grad_value + offset, attn[j] * s.weight[k], sz.D);
            }
          }
          bilinear_sample_backward(s, dot, attn[j], H, W, &grad_attn[j], &grad_loc[2 * j], &grad_loc[2 * j + 1]);
        }
      }
    }
  }
}

} // namespace

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::Tensor loc_c = sampling_locations.contiguous();
  const at::Tensor attn_c = attention_weights.contiguous();
  const Sizes sz = get_sizes(value_c, shapes_c, starts_c, loc_c);
  at::Tensor output = at::empty({sz.N, sz.Lq, sz.M * sz.D}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(
        sz,
        value_c.const_data_ptr<scalar_t>(),
        loc_c.const_data_ptr<scalar_t>(),
        attn_c.const_data_ptr<scalar_t>(),
        output.mutable_data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_ms_deform_attn_grad_output(value, sampling_locations, grad_output);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::Tensor loc_c = sampling_locations.contiguous();
  const at::Tensor attn_c = attention_weights.contiguous();
  const at::Tensor grad_output_c = grad_output.contiguous();
  const Sizes sz = get_sizes(value_c, shapes_c, starts_c, loc_c);
  at::Tensor grad_value = at::empty_like(value_c);
  at::Tensor grad_sampling_locations = at::empty_like(loc_c);
  at::Tensor grad_attention_weights = at::empty_like(attn_c);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    // Each thread owns whole (batch, head) pairs of grad_value: no atomics, a fixed order.
    at::parallel_for(0, sz.N * sz.M, 1, [&](int64_t begin, int64_t end) {
      backward_pairs<scalar_t>(
          sz,
          value_c.const_data_ptr<scalar_t>(),
          loc_c.const_data_ptr<scalar_t>(),
          attn_c.const_data_ptr<scalar_t>(),
          grad_output_c.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<scalar_t>(),
          grad_sampling_locations.mutable_data_ptr<scalar_t>(),
          grad_attention_weights.mutable_data_ptr<scalar_t>(),
          begin,
          end);
    });
  });
  return {grad_value, grad_sampling_locations, grad_attention_weights};
}

} // namespace depotr
