// Registers multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021) as the
// PyTorch operators depotr::ms_deform_attn_forward / depotr::ms_deform_attn_backward, with CPU
// and (when built with WITH_CUDA) CUDA kernels. Fake kernels and autograd are registered from
// Python (depotr/layers/ms_deform_attn_op.py).
#include <Python.h>
#include <torch/library.h>

#include "ms_deform_attn/ms_deform_attn.h"

namespace depotr {

void check_ms_deform_attn_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes must be an int64 (L, 2) tensor");
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(
      level_start_index.dim() == 1 && level_start_index.size(0) == L && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: level_start_index must be an int64 (L,) tensor with L=",
      L);
  const int64_t N = value.size(0);
  const int64_t M = value.size(2);
  TORCH_CHECK(
      sampling_locations.dim() == 6 && sampling_locations.size(0) == N && sampling_locations.size(2) == M &&
          sampling_locations.size(3) == L && sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) = (",
      N,
      ", Lq, ",
      M,
      ", ",
      L,
      ", P, 2), got ",
      sampling_locations.sizes());
  TORCH_CHECK(
      attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
      "ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = ",
      sampling_locations.sizes().slice(0, 5),
      ", got ",
      attention_weights.sizes());
  TORCH_CHECK(
      at::isFloatingType(value.scalar_type()) && sampling_locations.scalar_type() == value.scalar_type() &&
          attention_weights.scalar_type() == value.scalar_type(),
      "ms_deform_attn: value, sampling_locations and attention_weights must share one floating dtype");
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(
        t->device() == value.device(), "ms_deform_attn: all tensors must be on value's device ", value.device());
  }
}

void check_ms_deform_attn_grad_output(
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& grad_output) {
  TORCH_CHECK(
      grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
          grad_output.size(1) == sampling_locations.size(1) && grad_output.size(2) == value.size(2) * value.size(3),
      "ms_deform_attn: grad_output must be (N, Lq, M * D), got ",
      grad_output.sizes());
  TORCH_CHECK(
      grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
      "ms_deform_attn: grad_output must have value's dtype and device");
}

} // namespace depotr

// `import depotr._C` loads this library, which runs the TORCH_LIBRARY blocks below. The module
// itself is empty (the PyInit trick from PyTorch's custom C++/CUDA operators tutorial).
#define DEPOTR_CONCAT_(a, b) a##b
#define DEPOTR_CONCAT(a, b) DEPOTR_CONCAT_(a, b)
#define DEPOTR_STRINGIFY_(x) #x
#define DEPOTR_STRINGIFY(x) DEPOTR_STRINGIFY_(x)

extern "C" PyMODINIT_FUNC DEPOTR_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      DEPOTR_STRINGIFY(TORCH_EXTENSION_NAME), // name
      nullptr, // documentation
      -1, // per-interpreter state: none
      nullptr, // methods
  };
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(depotr, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(depotr, CPU, m) {
  m.impl("ms_deform_attn_forward", &depotr::ms_deform_attn_cpu_forward);
  m.impl("ms_deform_attn_backward", &depotr::ms_deform_attn_cpu_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(depotr, CUDA, m) {
  m.impl("ms_deform_attn_forward", &depotr::ms_deform_attn_cuda_forward);
  m.impl("ms_deform_attn_backward", &depotr::ms_deform_attn_cuda_backward);
}
#endif
