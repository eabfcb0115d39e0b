# Multi-scale deformable attention operator (Deformable DETR, Zhu et al., ICLR 2021, eq. 5):
# input validation, backend choice and the torch.library wiring of the compiled kernels
# (depotr/layers/csrc/ms_deform_attn). Interface after Deformable DETR's MSDeformAttnFunction
# (Apache-2.0, Copyright (c) 2020 SenseTime), without its im2col_step argument.
"""Multi-scale deformable attention: ``ms_deform_attn`` and its backends.

Letters: N batch, S value tokens (all levels), M heads, D channels per head, L levels,
P sampling points per level and head, Lq queries.

Three backends compute the same function (``BACKENDS``, in order of preference), all with autograd,
``torch.compile`` and ``torch.export``, all giving NaN (or +-inf) outputs exactly where the reference
does for a NaN or +-inf location or weight (rule in csrc/ms_deform_attn/ms_deform_attn_bilinear.h):

* ``"compiled"``: the ``depotr::ms_deform_attn_forward`` / ``_backward`` operators of ``depotr._C``
  (C++ on CPU for float32/float64; CUDA for float16/bfloat16/float32/float64 when built with CUDA);
* ``"triton"``: the ``depotr::ms_deform_attn_triton_forward`` / ``_backward`` operators
  (:mod:`~depotr.layers.ms_deform_attn_triton`) on CUDA for float16/bfloat16/float32/float64; on
  CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, as the tests run them);
* ``"reference"``: :func:`~depotr.layers.ms_deform_attn_reference.ms_deform_attn_reference`
  (``F.grid_sample`` per level), any device and dtype that ``grid_sample`` supports.

The backend is chosen once per (device, dtype), on first use. CUDA: the first of compiled, triton,
reference that serves the dtype and passes a self-check against the float64 reference (forward and
the three gradients on a small random problem); the backends skipped on the way (unavailable, "no
kernel image" included, raised or disagreed) are named in one warning. Other devices: compiled where
it serves the dtype, else the reference (no self-check: CI runs the C++ kernel's tests on CPU).
``DEPOTR_MSDA_BACKEND=compiled|triton|reference`` forces one: where it cannot serve the device and
dtype, or fails its self-check, ``ms_deform_attn`` raises RuntimeError instead of falling back.
"""

import functools
import importlib
import logging
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .ms_deform_attn_reference import ms_deform_attn_reference

__all__ = [
    "BACKENDS",
    "BACKEND_ENV_VAR",
    "MSDABackend",
    "check_ms_deform_attn_inputs",
    "ms_deform_attn",
    "msda_backend",
]

logger = logging.getLogger(__name__)

BACKEND_ENV_VAR = "DEPOTR_MSDA_BACKEND"
# Device type -> (dispatch key, dtypes the compiled kernel handles there).
_COMPILED_KERNELS = {
    "cpu": ("CPU", (torch.float32, torch.float64)),
    "cuda": ("CUDA", (torch.float16, torch.bfloat16, torch.float32, torch.float64)),
}
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Triton's interpreter (numpy) has no bfloat16.
_TRITON_INTERPRETER_DTYPES = (torch.float16, torch.float32, torch.float64)
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
    if not hasattr(torch.ops.depotr, "ms_deform_attn_forward"):
        try:
            from .. import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY blocks)
        except ImportError as e:
            return f"depotr._C could not be imported ({e}); build it: python setup.py build_ext --inplace"
    return None


_COMPILED_OPS_ERROR = _load_compiled_ops()
# (kernel module, None) once ms_deform_attn_triton imported, (None, why) if it cannot be.
_TRITON_KERNELS: Optional[tuple[Optional[ModuleType], Optional[str]]] = None


def _triton_kernels() -> tuple[Optional[ModuleType], Optional[str]]:
    """Imports :mod:`~depotr.layers.ms_deform_attn_triton` (and Triton) on first use; returns
    (module, None), or (None, why it cannot be imported)."""
    global _TRITON_KERNELS
    if _TRITON_KERNELS is None:
        try:
            _TRITON_KERNELS = (importlib.import_module(".ms_deform_attn_triton", __package__), None)
        except Exception as e:  # ImportError, or a broken Triton install failing at import
            _TRITON_KERNELS = (None, f"Triton could not be imported ({type(e).__name__}: {e})")
    return _TRITON_KERNELS


def _check_shapes(*inputs: Tensor) -> tuple[int, int, int, int]:
    """Checks the ranks and shared sizes of the five arguments of :func:`ms_deform_attn`;
    returns (N, Lq, M, D). Looks at shapes only, so it also runs on fake tensors."""
    for (name, dims), tensor in zip(_ARG_DIMS.items(), inputs):
        if tensor.dim() != len(dims):
            raise ValueError(
                f"ms_deform_attn: {name} must be {len(dims)}-D ({', '.join(dims)}), got shape {tuple(tensor.shape)}"
            )
    value, spatial_shapes, _, sampling_locations, _ = inputs
    N, S, M, D = value.shape
    Lq, P = sampling_locations.shape[1], sampling_locations.shape[4]
    sizes = {"N": N, "S": S, "M": M, "D": D, "L": spatial_shapes.shape[0], "Lq": Lq, "P": P, "2": 2}
    for (name, dims), tensor in zip(_ARG_DIMS.items(), inputs):
        if tuple(tensor.shape) != tuple(sizes[dim] for dim in dims):
            known = ", ".join(f"{dim}={sizes[dim]}" for dim in dims if dim != "2")
            raise ValueError(
                f"ms_deform_attn: {name} must be ({', '.join(dims)}) with {known} as value, spatial_shapes "
                f"and sampling_locations give them, got shape {tuple(tensor.shape)}"
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
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for name, tensor in zip(_ARG_DIMS, inputs):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    _check_shapes(*inputs)
    if not value.dtype.is_floating_point:
        raise ValueError(f"ms_deform_attn: value must have a floating dtype, got {value.dtype}")
    for name, tensor in zip(_ARG_DIMS, inputs):
        if name in ("spatial_shapes", "level_start_index"):
            if tensor.dtype != torch.int64:
                raise ValueError(f"ms_deform_attn: {name} must be int64, got {tensor.dtype}")
        elif tensor.dtype != value.dtype:
            raise ValueError(f"ms_deform_attn: {name} must have value's dtype {value.dtype}, got {tensor.dtype}")
        if tensor.device != value.device:
            raise ValueError(f"ms_deform_attn: {name} is on {tensor.device}, expected value's device {value.device}")
    if torch.compiler.is_compiling():
        return
    shapes = spatial_shapes.tolist()
    if any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(f"ms_deform_attn: spatial_shapes must hold positive (H_l, W_l), got {shapes}")
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


def _unsupported_dtype(kernel: str, dtypes: tuple[torch.dtype, ...], dtype: torch.dtype) -> Optional[str]:
    return None if dtype in dtypes else f"{kernel} supports {[str(t) for t in dtypes]}, not {dtype}"


def _missing_compiled_kernel(device_type: str, dtype: torch.dtype) -> Optional[str]:
    """Returns why no compiled kernel serves (device_type, dtype), or None if one does."""
    if _COMPILED_OPS_ERROR is not None:
        return _COMPILED_OPS_ERROR
    if device_type not in _COMPILED_KERNELS:
        return f"depotr._C has no kernel for device type {device_type!r}"
    dispatch_key, dtypes = _COMPILED_KERNELS[device_type]
    if not torch.ops.depotr.ms_deform_attn_forward.default.has_kernel_for_dispatch_key(dispatch_key):
        return f"depotr._C was built without {dispatch_key} kernels (FORCE_CUDA=1 builds CUDA ones)"
    return _unsupported_dtype(f"the {dispatch_key} kernel", dtypes, dtype)


def _missing_triton_kernel(device_type: str, dtype: torch.dtype) -> Optional[str]:
    """Returns why the Triton kernels cannot serve (device_type, dtype), or None if they can."""
    kernels, error = _triton_kernels()
    if error is not None:
        return error
    if device_type == "cpu" and kernels.INTERPRETED:
        return _unsupported_dtype("Triton's interpreter", _TRITON_INTERPRETER_DTYPES, dtype)
    if device_type != "cuda":
        return (
            f"the Triton kernels run on CUDA devices, not {device_type!r} (on CPU only under "
            "TRITON_INTERPRET=1, set before depotr.layers.ms_deform_attn_triton is imported)"
        )
    return _unsupported_dtype("Triton on CUDA", _TRITON_DTYPES, dtype)


def _run_triton_kernel(name: str, *inputs: Tensor) -> Union[Tensor, tuple[Tensor, ...]]:
    """Runs ``ms_deform_attn_triton.<name>``; RuntimeError saying why if Triton cannot be imported."""
    kernels, error = _triton_kernels()
    if error is not None:
        raise RuntimeError(error)
    return getattr(kernels, name)(*inputs)


# The Triton kernels as operators with the compiled ones' schemas (Triton is imported on first call).
_ARGS = ", ".join(f"Tensor {name}" for name in _ARG_DIMS)
for _name, _schema in (
    ("ms_deform_attn_triton_forward", f"({_ARGS}) -> Tensor"),
    ("ms_deform_attn_triton_backward", f"({_ARGS}, Tensor grad_output) -> (Tensor, Tensor, Tensor)"),
):
    torch.library.custom_op(
        f"depotr::{_name}", functools.partial(_run_triton_kernel, _name), mutates_args=(), schema=_schema
    )


@dataclass(frozen=True)
class MSDABackend:
    """One implementation of :func:`ms_deform_attn`: ``forward`` takes its five (validated) arguments
    and returns the (N, Lq, M * D) output, differentiable w.r.t. the three float inputs;
    ``unavailable(device_type, dtype)`` returns why the backend cannot serve them, or None."""

    forward: Callable[..., Tensor]
    unavailable: Callable[[str, torch.dtype], Optional[str]]


# The backends by name, in order of preference.
BACKENDS: dict[str, MSDABackend] = {
    "compiled": MSDABackend(lambda *inputs: torch.ops.depotr.ms_deform_attn_forward(*inputs), _missing_compiled_kernel),
    "triton": MSDABackend(torch.ops.depotr.ms_deform_attn_triton_forward, _missing_triton_kernel),
    "reference": MSDABackend(ms_deform_attn_reference, lambda device_type, dtype: None),
}
# Backends tried in order, per device type, when DEPOTR_MSDA_BACKEND is unset; other device
# types use _DEFAULT_ORDER (Triton runs on CPU only under its slow interpreter: forced only).
_FALLBACK_ORDER = {"cuda": ("compiled", "triton", "reference")}
_DEFAULT_ORDER = ("compiled", "reference")
# Device types where a backend checks itself against the reference before its first use.
_SELF_CHECKED_DEVICE_TYPES = ("cuda",)
# max |backend - reference| / max |reference| a self-check accepts, output and each gradient.
_SELF_CHECK_TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
# (forced backend or "", device, dtype) -> chosen backend name.
_CHOICES: dict[tuple[str, str, torch.dtype], str] = {}


def _forced_backend() -> str:
    """The backend named by DEPOTR_MSDA_BACKEND, or "" when it is unset."""
    forced = os.environ.get(BACKEND_ENV_VAR, "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV_VAR} must be one of {sorted(BACKENDS)} (or unset), got {forced!r}")
    return forced


def msda_backend(device: Union[torch.device, str], dtype: torch.dtype = torch.float32) -> str:
    """The backend (a key of ``BACKENDS``) that :func:`ms_deform_attn` uses for ``dtype`` on ``device``,
    chosen on the first call for them as the module docstring says. Raises ValueError for an unknown
    ``DEPOTR_MSDA_BACKEND``, RuntimeError when the forced backend cannot serve or fails its self-check.
    """
    forced = _forced_backend()
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # the choice is made per physical device
        device = torch.device("cuda", torch.cuda.current_device())
    key = (forced, str(device), dtype)
    if key not in _CHOICES:
        _CHOICES[key] = _choose(forced, device, dtype)
    return _CHOICES[key]


def _choose(forced: str, device: torch.device, dtype: torch.dtype) -> str:
    """The first backend of the forced one / the fallback order that serves (device, dtype) and,
    where self-checked, passes its self-check; see :func:`msda_backend`."""
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    candidates = (forced,) if forced else _FALLBACK_ORDER.get(device.type, _DEFAULT_ORDER)
    skipped = []
    for name in candidates:
        unavailable = BACKENDS[name].unavailable(device.type, dtype)
        failed = None
        if unavailable is None and device.type in _SELF_CHECKED_DEVICE_TYPES and name != "reference":
            failed = _self_check(BACKENDS[name], device, dtype)
        if unavailable is None and failed is None:
            if skipped:
                logger.warning(
                    "ms_deform_attn on %s, %s: %s; using the %r backend", where, dtype, "; ".join(skipped), name
                )
            return name
        problem = unavailable or f"failed its self-check: {failed}"
        if forced:
            raise RuntimeError(f"{BACKEND_ENV_VAR}={forced}, but on {where}, {dtype}: {problem}")
        skipped.append(f"backend {name!r} " + (f"is unavailable: {problem}" if unavailable else problem))
    raise RuntimeError(f"ms_deform_attn: no backend serves {where}, {dtype}: {'; '.join(skipped)}")


def _self_check_problem(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
    grad_output) of a small random problem at the training layout (L = 4 levels, P = 4 points,
    D = 32 channels), locations in [-0.1, 1.1] so that borders and the zero padding are used.
    Drawn from its own generator: the global random state is left alone."""
    generator = torch.Generator().manual_seed(0)
    N, Lq, M, D, P = 3, 5, 2, 32, 4
    spatial_shapes = torch.tensor([[5, 6], [3, 3], [2, 2], [1, 1]])
    L, S = spatial_shapes.shape[0], int(spatial_shapes.prod(1).sum())
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    value = torch.randn(N, S, M, D, generator=generator)
    locations = torch.rand(N, Lq, M, L, P, 2, generator=generator) * 1.2 - 0.1
    weights = torch.rand(N, Lq, M, L, P, generator=generator).softmax(-1)
    grad_output = torch.randn(N, Lq, M * D, generator=generator)
    floats = (value, locations, weights, grad_output)
    value, locations, weights, grad_output = (t.to(device, dtype) for t in floats)
    return value, spatial_shapes.to(device), level_start_index.to(device), locations, weights, grad_output


def _forward_and_grads(forward: Callable[..., Tensor], inputs: tuple[Tensor, ...], grad_output: Tensor) -> list[Tensor]:
    """[output, grad value, grad sampling_locations, grad attention_weights] of forward."""
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    output = forward(*inputs)
    return [output.detach(), *torch.autograd.grad(output, [inputs[i] for i in (0, 3, 4)], grad_output)]


def _self_check(backend: MSDABackend, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Runs ``backend`` on :func:`_self_check_problem` and compares its output and three
    gradients with the float64 reference on the same (rounded) inputs; returns what went wrong
    (the exception, a wrong shape or dtype, or the first quantity off by more than the dtype's
    tolerance, NaN included), or None."""
    # Real tensors with autograd, and real comparisons, even when the first call comes under no_grad,
    # inference_mode, autocast or a tracing mode (torch.export's fake tensors).
    with (
        torch.utils._python_dispatch._disable_current_modes(),
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device.type, enabled=False),
    ):
        try:
            *inputs, grad_output = _self_check_problem(device, dtype)
            results = _forward_and_grads(backend.forward, tuple(inputs), grad_output)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # surface asynchronous kernel errors here
        except Exception as e:  # "no kernel image", compiler errors, bad launches, ...
            return f"{type(e).__name__}: {e}"
        reference_inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)
        expected = _forward_and_grads(ms_deform_attn_reference, reference_inputs, grad_output.double())
        names = ("output", "grad value", "grad sampling_locations", "grad attention_weights")
        tolerance = _SELF_CHECK_TOLERANCES.get(dtype, 2e-2)
        for name, actual, reference in zip(names, results, expected):
            if actual.shape != reference.shape or actual.dtype != dtype:
                return f"{name} is {tuple(actual.shape)} {actual.dtype}, expected {tuple(reference.shape)} {dtype}"
            error = ((actual.double() - reference).abs().max() / reference.abs().max()).item()
            if not error <= tolerance:  # NaN fails too
                return f"{name} differs from the reference by {error:.1e} (tolerance {tolerance:.0e})"
    return None


@torch.compiler.assume_constant_result
def _chosen_backend(device: torch.device, dtype: torch.dtype) -> str:
    # torch.compile records the result as a constant (the choice depends on the environment, not
    # on data), so a compiled graph keeps the backend chosen when it was traced.
    return msda_backend(device, dtype)


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR, eq. 5): per query and head, the value maps
    sampled bilinearly at the sampling locations, weighted by the attention weights and summed over
    levels and points.

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

    value, sampling_locations and attention_weights share one floating dtype, all tensors one device
    (errors: :func:`check_ms_deform_attn_inputs`); empty N or Lq give an empty output. Non-finite
    inputs: see the module docstring; the implementation that runs: :func:`msda_backend`.
    """
    inputs = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_ms_deform_attn_inputs(*inputs)
    return BACKENDS[_chosen_backend(value.device, value.dtype)].forward(*inputs)


def _register_fake_and_autograd(forward_op: str, backward_op: str) -> None:
    """Fake kernels (for torch.compile / torch.export) and autograd of a ``depotr::`` forward /
    backward operator pair with the schemas of ``ms_deform_attn_forward`` / ``_backward``."""

    @torch.library.register_fake(f"depotr::{forward_op}")
    def _forward_fake(*inputs: Tensor) -> Tensor:
        N, Lq, M, D = _check_shapes(*inputs)
        return inputs[0].new_empty((N, Lq, M * D))

    @torch.library.register_fake(f"depotr::{backward_op}")
    def _backward_fake(*inputs: Tensor) -> tuple[Tensor, ...]:
        _check_shapes(*inputs[:5])
        value, _, _, sampling_locations, attention_weights = inputs[:5]
        return tuple(t.new_empty(t.shape) for t in (value, sampling_locations, attention_weights))

    backward = getattr(torch.ops.depotr, backward_op)

    def _backward(ctx, grad_output: Tensor) -> tuple[Optional[Tensor], ...]:
        grad_value, grad_locations, grad_weights = backward(*ctx.saved_tensors, grad_output)
        return grad_value, None, None, grad_locations, grad_weights

    torch.library.register_autograd(
        f"depotr::{forward_op}", _backward, setup_context=lambda ctx, inputs, output: ctx.save_for_backward(*inputs)
    )


if _COMPILED_OPS_ERROR is None:
    _register_fake_and_autograd("ms_deform_attn_forward", "ms_deform_attn_backward")
_register_fake_and_autograd("ms_deform_attn_triton_forward", "ms_deform_attn_triton_backward")
