// Bilinear sampling shared by the CPU and CUDA kernels of multi-scale deformable attention.
// Follows Deformable DETR's ms_deform_im2col_bilinear (Zhu et al., ICLR 2021; Apache-2.0,
// Copyright (c) 2020 SenseTime), with F.grid_sample's per-corner zero padding so that values and
// gradients match grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False).
//
// Non-finite inputs follow the F.grid_sample reference exactly (forward) and in which gradients
// turn non-finite (backward): a NaN or +-inf location samples NaN; a finite location outside the
// map samples 0, so its attention weight contributes attn * 0 (NaN for a NaN or +-inf attn);
// inside the map plain IEEE arithmetic propagates NaN and inf. A diverging model therefore gets a
// NaN output from every backend instead of a silently finite one.
#pragma once

#include <c10/macros/Macros.h>

#include <math.h>
#include <stdint.h>

namespace depotr {

// The four pixels around a sampling point of an (H, W) map, nw, ne, sw, se in that order.
template <typename T>
struct BilinearSample {
  int64_t index[4]; // h * W + w of each corner, or -1 where the corner lies outside the map
  T weight[4]; // (1-lh)(1-lw), (1-lh)lw, lh(1-lw), lh lw
  T lh; // fractional part of the row coordinate
  T lw; // fractional part of the column coordinate
};

// Where a sampling point falls.
enum class SampleKind {
  kInside, // at least one corner lies in the map
  kOutside, // finite location, no corner in the map: the sample is 0
  kNonFinite, // NaN or +-inf coordinate: the sample is NaN
};

// Classifies the normalised location (x, y) in an (H, W) map and, for kInside, fills `s` (left
// unset otherwise). Pixel coordinates are x * W - 0.5 and y * H - 0.5 (pixel centres at +0.5).
template <typename T>
C10_HOST_DEVICE inline SampleKind bilinear_sample(T x, T y, int64_t H, int64_t W, BilinearSample<T>* s) {
  if (!(::isfinite(x) && ::isfinite(y))) {
    return SampleKind::kNonFinite;
  }
  const T w_im = x * static_cast<T>(W) - static_cast<T>(0.5);
  const T h_im = y * static_cast<T>(H) - static_cast<T>(0.5);
  if (!(h_im >= static_cast<T>(-1) && w_im >= static_cast<T>(-1) && h_im < static_cast<T>(H) &&
        w_im < static_cast<T>(W))) {
    return SampleKind::kOutside;
  }
  const int64_t h_low = static_cast<int64_t>(::floor(h_im));
  const int64_t w_low = static_cast<int64_t>(::floor(w_im));
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  s->lh = h_im - static_cast<T>(h_low);
  s->lw = w_im - static_cast<T>(w_low);
  const T hh = static_cast<T>(1) - s->lh;
  const T hw = static_cast<T>(1) - s->lw;
  const bool h_low_in = h_low >= 0;
  const bool h_high_in = h_high < H;
  const bool w_low_in = w_low >= 0;
  const bool w_high_in = w_high < W;
  s->index[0] = h_low_in && w_low_in ? h_low * W + w_low : -1;
  s->index[1] = h_low_in && w_high_in ? h_low * W + w_high : -1;
  s->index[2] = h_high_in && w_low_in ? h_high * W + w_low : -1;
  s->index[3] = h_high_in && w_high_in ? h_high * W + w_high : -1;
  s->weight[0] = hh * hw;
  s->weight[1] = hh * s->lw;
  s->weight[2] = s->lh * hw;
  s->weight[3] = s->lh * s->lw;
  return SampleKind::kInside;
}

// attn * sample for a point that reads no pixel (kOutside: sample 0, kNonFinite: sample NaN):
// 0 for a finite attn outside the map, NaN otherwise. The same value is added to every channel.
template <typename T>
C10_HOST_DEVICE inline T no_pixel_contribution(SampleKind kind, T attn) {
  return kind == SampleKind::kNonFinite ? static_cast<T>(NAN) : attn * static_cast<T>(0);
}

// Gradients d/d attn, d/dx, d/dy of a point that reads no pixel: (NaN, NaN, NaN) for a non-finite
// location; (0, attn * 0, attn * 0) outside the map, as grid_sample's backward gives.
template <typename T>
C10_HOST_DEVICE inline void no_pixel_backward(SampleKind kind, T attn, T* grad_attn, T* grad_x, T* grad_y) {
  const T nan = static_cast<T>(NAN);
  *grad_attn = kind == SampleKind::kNonFinite ? nan : static_cast<T>(0);
  *grad_x = kind == SampleKind::kNonFinite ? nan : attn * static_cast<T>(0);
  *grad_y = *grad_x;
}

// Gradients of attn * sample(x, y) given dot[k] = <grad_output, value at corner k> (0 for corners
// outside the map): d/d attn, d/dx and d/dy (x, y normalised, hence the W and H factors).
template <typename T>
C10_HOST_DEVICE inline void bilinear_sample_backward(
    const BilinearSample<T>& s,
    const T dot[4],
    T attn,
    int64_t H,
    int64_t W,
    T* grad_attn,
    T* grad_x,
    T* grad_y) {
  const T hh = static_cast<T>(1) - s.lh;
  const T hw = static_cast<T>(1) - s.lw;
  *grad_attn = s.weight[0] * dot[0] + s.weight[1] * dot[1] + s.weight[2] * dot[2] + s.weight[3] * dot[3];
  *grad_x = attn * static_cast<T>(W) * (hh * (dot[1] - dot[0]) + s.lh * (dot[3] - dot[2]));
  *grad_y = attn * static_cast<T>(H) * (hw * (dot[2] - dot[0]) + s.lw * (dot[3] - dot[1]));
}

} // namespace depotr
