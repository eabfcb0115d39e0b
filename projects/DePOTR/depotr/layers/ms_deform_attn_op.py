# Multi-scale deformable attention operator (Deformable DETR, Zhu et al., ICLR 2021, eq. 5):
# input validation, backend choice and the torch.library wiring of the compiled kernels
# (depotr/layers/csrc/ms_deform_attn). Interface after Deformable DETR's MSDeformAttnFunction
# (Apache-2.0, Copyright (c) 2020 SenseTime), without its im2col_step argument.
"""Multi-scale deformable attention: ``ms_deform_attn`` and its backends.

Letters: N batch, S value tokens (all levels), M heads, D channels per head, L levels,
P sampling points per level and head, Lq queries.

Two backends compute the same function:

* ``"compiled"``: the ``depotr::ms_deform_attn_forward`` / ``ms_deform_attn_backward`` operators
  of ``depotr._C`` (C++ on CPU for float32/float64; CUDA for float16/bfloat16/float32/float64
  when the extension was built with CUDA). They work with autograd, ``torch.compile`` and
  ``torch.export``.
* ``"reference"``: :func:`~depotr.layers.ms_deform_attn_reference.ms_deform_attn_reference`,
  ``F.grid_sample`` per level; any device and dtype that ``grid_sample`` supports.

Each call uses the compiled operator when it serves the device and dtype, else the reference.
The environment variable ``DEPOTR_MSDA_BACKEND=reference|compiled`` forces one per call.
"""
import os
from typing import Optional, Union

import torch
from torch import Tensor

from .ms_deform_attn_reference import ms_deform_attn_reference

__all__ = ["BACKEND_ENV_VAR", "check_ms_deform_attn_inputs", "ms_deform_attn", "msda_backend"]

BACKEND_ENV_VAR = "DEPOTR_MSDA_BACKEND"
_FORWARD_OP = "depotr::ms_deform_attn_forward"
_BACKWARD_OP = "depotr::ms_deform_attn_backward"
# Device type -> (dispatch key, dtypes the compiled kernel handles there).
_COMPILED_KERNELS = {
    "cpu": ("CPU", (torch.float32, torch.float64)),
    "cuda": ("CUDA", (torch.float16, torch.bfloat16, torch.float32, torch.float64)),
}
# Arguments of ms_deform_attn and their dimensions.
_ARG_DIMS = {
    "value": ("N", "S", "M", "D"),
    "spatial_shapes": ("L", "2"),
    "level_start_index": ("L",),
    "sampling_locations": ("N", "Lq", "M", "L", "P", "2"),
    "attention_weights": ("N", "Lq", "M", "L", "P"),
}


def _load_compiled_ops() -> Optional[str]:
    """Registers the compiled operators by importing ``depotr._C`` unless they are registered
    already (e.g. by ``torch.utils.cpp_extension.load`` in tools/check_msda_cuda.py). Returns
    why they are unavailable, or None."""
    if hasattr(torch.ops.depotr, "ms_deform_attn_forward"):
        return None
    try:
        from .. import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY blocks)
    except ImportError as e:
        return (
            f"depotr._C could not be imported ({e}); build it: python setup.py build_ext --inplace"
        )
    return None


_COMPILED_OPS_ERROR = _load_compiled_ops()


def _check_shapes(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> tuple[int, int, int, int]:
    """Checks ranks and the sizes the arguments share; returns (N, Lq, M, D).

    Looks at shapes only, so it also runs on fake tensors (the operator's fake kernel).
    """
    tensors = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for (name, dims), tensor in zip(_ARG_DIMS.items(), tensors):
        if tensor.dim() != len(dims):
            raise ValueError(
                f"ms_deform_attn: {name} must be {len(dims)}-D ({', '.join(dims)}), "
                f"got shape {tuple(tensor.shape)}"
            )
    N, _, M, D = value.shape
    L = spatial_shapes.shape[0]
    Lq = sampling_locations.shape[1]
    if spatial_shapes.shape[1] != 2:
        shape = tuple(spatial_shapes.shape)
        raise ValueError(f"ms_deform_attn: spatial_shapes must be (L, 2), got shape {shape}")
    if level_start_index.shape[0] != L:
        raise ValueError(
            f"ms_deform_attn: level_start_index must be (L,) with L={L} as in spatial_shapes, "
            f"got shape {tuple(level_start_index.shape)}"
        )
    expected = (N, Lq, M, L, sampling_locations.shape[4], 2)
    if tuple(sampling_locations.shape) != expected:
        raise ValueError(
            f"ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) with N={N}, M={M} "
            f"from value and L={L} from spatial_shapes, got shape {tuple(sampling_locations.shape)}"
        )
    if tuple(attention_weights.shape) != expected[:-1]:
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {expected[:-1]} as in "
            f"sampling_locations, got shape {tuple(attention_weights.shape)}"
        )
    return N, Lq, M, D


def check_ms_deform_attn_inputs(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> None:
    """Validates the arguments of :func:`ms_deform_attn` before any kernel runs.

    Raises TypeError for non-tensors and ValueError naming the offending argument for: wrong
    ranks or sizes, non-floating or mismatched dtypes, spatial_shapes / level_start_index not
    int64, tensors on different devices, non-positive level sizes, sum(H_l * W_l) != S, and
    level_start_index not the exclusive cumsum of H_l * W_l. The last three read the two small
    int64 tensors (a device sync on CUDA) and are skipped while ``torch.compile`` traces.
    """
    tensors = dict(
        zip(
            _ARG_DIMS,
            (value, spatial_shapes, level_start_index, sampling_locations, attention_weights),
        )
    )
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"ms_deform_attn: {name} must be a torch.Tensor, got {type(tensor).__name__}"
            )
    _check_shapes(*tensors.values())
    if not value.dtype.is_floating_point:
        raise ValueError(f"ms_deform_attn: value must have a floating dtype, got {value.dtype}")
    for name, tensor in tensors.items():
        if name in ("spatial_shapes", "level_start_index"):
            if tensor.dtype != torch.int64:
                raise ValueError(f"ms_deform_attn: {name} must be int64, got {tensor.dtype}")
        elif tensor.dtype != value.dtype:
            raise ValueError(
                f"ms_deform_attn: {name} must have value's dtype {value.dtype}, got {tensor.dtype}"
            )
        if tensor.device != value.device:
            raise ValueError(
                f"ms_deform_attn: {name} is on {tensor.device}, expected value's device {value.device}"
            )
    if torch.compiler.is_compiling():
        return
    shapes = spatial_shapes.tolist()
    if any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must hold positive (H_l, W_l), got {shapes}"
        )
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != value.shape[1]:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes {shapes} give sum(H_l * W_l) = {sum(sizes)} tokens, "
            f"but value has S = {value.shape[1]}"
        )
    expected_starts = [sum(sizes[:level]) for level in range(len(sizes))]
    if level_start_index.tolist() != expected_starts:
        raise ValueError(
            f"ms_deform_attn: level_start_index must be the exclusive cumsum of H_l * W_l, "
            f"{expected_starts}, got {level_start_index.tolist()}"
        )


def msda_backend(device: Union[torch.device, str], dtype: torch.dtype = torch.float32) -> str:
    """Returns the backend, ``"compiled"`` or ``"reference"``, that :func:`ms_deform_attn` uses
    for tensors of ``dtype`` on ``device``.

    ``DEPOTR_MSDA_BACKEND=reference|compiled`` forces one; forcing ``compiled`` where no compiled
    kernel serves the device and dtype raises RuntimeError.
    """
    device_type = torch.device(device).type
    forced = os.environ.get(BACKEND_ENV_VAR, "").strip().lower()
    if forced not in ("", "reference", "compiled"):
        raise ValueError(
            f"{BACKEND_ENV_VAR} must be 'reference' or 'compiled' (or unset), got {forced!r}"
        )
    if forced == "reference":
        return "reference"
    missing = _missing_compiled_kernel(device_type, dtype)
    if missing is None:
        return "compiled"
    if forced == "compiled":
        raise RuntimeError(f"{BACKEND_ENV_VAR}=compiled, but {missing}")
    return "reference"


def _missing_compiled_kernel(device_type: str, dtype: torch.dtype) -> Optional[str]:
    """Returns why no compiled kernel serves (device_type, dtype), or None if one does."""
    if _COMPILED_OPS_ERROR is not None:
        return _COMPILED_OPS_ERROR
    if device_type not in _COMPILED_KERNELS:
        return f"depotr._C has no kernel for device type {device_type!r}"
    dispatch_key, dtypes = _COMPILED_KERNELS[device_type]
    if not torch.ops.depotr.ms_deform_attn_forward.default.has_kernel_for_dispatch_key(
        dispatch_key
    ):
        return f"depotr._C was built without {dispatch_key} kernels (FORCE_CUDA=1 builds CUDA ones)"
    if dtype not in dtypes:
        return f"the {dispatch_key} kernel supports {[str(t) for t in dtypes]}, not {dtype}"
    return None


@torch.compiler.assume_constant_result
def _use_compiled(device: torch.device, dtype: torch.dtype) -> bool:
    # torch.compile records the result as a constant (the choice depends on the environment, not
    # on data), so a compiled graph keeps the backend chosen when it was traced.
    return msda_backend(device, dtype) == "compiled"


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR, eq. 5).

    For each query, head, level and point, samples the value map of that level and head
    bilinearly at the sampling location, multiplies by the attention weight and sums over levels
    and points.

    Args:
        value: (N, S, M, D) value tokens of all levels, flattened row-major per level and
            concatenated level by level; S = sum_l H_l * W_l.
        spatial_shapes: (L, 2) int64, row l = (H_l, W_l).
        level_start_index: (L,) int64, first token of level l in S: the exclusive cumsum of
            H_l * W_l, i.e. ``torch.cat((spatial_shapes.new_zeros(1),
            spatial_shapes.prod(1).cumsum(0)[:-1]))``.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), (0, 0) the top-left corner
            and (1, 1) the bottom-right corner of the map; pixel coordinate ``x * W_l - 0.5``
            (``align_corners=False``). Locations may lie outside [0, 1]: the map is zero-padded.
        attention_weights: (N, Lq, M, L, P), usually softmax-normalised over L * P.

    Returns:
        (N, Lq, M * D), heads concatenated.

    value, sampling_locations and attention_weights share one floating dtype; all tensors share
    one device. Empty N or Lq give an empty output. See :func:`check_ms_deform_attn_inputs` for
    the errors and :func:`msda_backend` for which implementation runs.
    """
    check_ms_deform_attn_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    if _use_compiled(value.device, value.dtype):
        return torch.ops.depotr.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return ms_deform_attn_reference(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )


def _register_compiled_ops() -> None:
    """Fake kernels (for torch.compile / torch.export) and autograd of the compiled operators."""

    @torch.library.register_fake(_FORWARD_OP)
    def _forward_fake(
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
    ) -> Tensor:
        N, Lq, M, D = _check_shapes(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return value.new_empty((N, Lq, M * D))

    @torch.library.register_fake(_BACKWARD_OP)
    def _backward_fake(
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
        grad_output: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        _check_shapes(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return (
            value.new_empty(value.shape),
            sampling_locations.new_empty(sampling_locations.shape),
            attention_weights.new_empty(attention_weights.shape),
        )

    def _setup_context(ctx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        (
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
        ) = ctx.saved_tensors
        (
            grad_value,
            grad_sampling_locations,
            grad_attention_weights,
        ) = torch.ops.depotr.ms_deform_attn_backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_output,
        )
        return grad_value, None, None, grad_sampling_locations, grad_attention_weights

    torch.library.register_autograd(_FORWARD_OP, _backward, setup_context=_setup_context)


if _COMPILED_OPS_ERROR is None:
    _register_compiled_ops()
