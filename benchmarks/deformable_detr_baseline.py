# The original multi-scale deformable attention op of Deformable DETR (Zhu et al., ICLR 2021;
# fundamentalvision/Deformable-DETR models/ops, Apache-2.0, Copyright (c) 2020 SenseTime), as a
# benchmark baseline. Its code stays in ../shared/baselines/deformable_detr_ops (see the README
# there): this module builds it JIT into a temporary folder and never installs it.
"""Loads the original Deformable DETR CUDA kernel for ``bench_msda.py``'s ``deformable_detr`` backend.

Two things keep the unmodified sources from running on current PyTorch, handled here (and a
CUDA toolkit without cuSPARSE headers gets those of PyTorch's nvidia wheels):

* ``AT_DISPATCH_FLOATING_TYPES(value.type(), ...)``: ``Tensor::type()`` is no ScalarType any more,
  so the build copies the sources into the temporary folder and dispatches on
  ``value.scalar_type()`` (with ``.is_cuda()`` / ``.data_ptr<T>()`` for the other deprecated
  calls); the kernels themselves are untouched.
* its forward asserts ``batch % im2col_step == 0``: :func:`load_deformable_detr` passes the largest
  divisor of the batch that is <= 64 (64 is its default; a larger step only batches more of the
  same kernel launches).

CUDA only (its CPU functions raise), float32 / float64 only (``AT_DISPATCH_FLOATING_TYPES``).
"""

import importlib.util
import os
import shutil
import sys
from typing import Callable

import torch
from torch import Tensor

__all__ = ["DEFAULT_BASELINE_DIR", "BASELINE_DTYPES", "load_deformable_detr"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared next to the checkout, or shared/ inside it (where a copy of the checkout carries it).
_CANDIDATES = [
    os.path.join(root, "shared", "baselines", "deformable_detr_ops") for root in (os.path.dirname(REPO), REPO)
]
DEFAULT_BASELINE_DIR = next((c for c in _CANDIDATES if os.path.isdir(c)), _CANDIDATES[0])
# The dtypes its kernels are instantiated for.
BASELINE_DTYPES = (torch.float32, torch.float64)
_REWRITES = (
    ("AT_DISPATCH_FLOATING_TYPES(value.type(),", "AT_DISPATCH_FLOATING_TYPES(value.scalar_type(),"),
    (".type().is_cuda()", ".is_cuda()"),
    (".data<", ".data_ptr<"),
)
_MODULE_NAME = "MultiScaleDeformableAttention"  # what its Python wrapper imports


def _copy_sources(ops_dir: str, build_dir: str) -> list[str]:
    """Copies models/ops/src into build_dir/src with _REWRITES applied; returns the sources."""
    src = os.path.join(build_dir, "src")
    shutil.copytree(os.path.join(ops_dir, "src"), src, dirs_exist_ok=True)
    sources = []
    for folder, _, files in os.walk(src):
        for name in files:
            path = os.path.join(folder, name)
            with open(path) as f:
                text = f.read()
            for old, new in _REWRITES:
                text = text.replace(old, new)
            with open(path, "w") as f:
                f.write(text)
            if name.endswith((".cpp", ".cu")):
                sources.append(path)
    return sorted(sources)


def _extra_include_paths() -> list[str]:
    """Its .cpp files include ATen/cuda/CUDAContext.h, which needs cuSPARSE / cuBLAS headers; a
    CUDA toolkit without them (as on our machines) gets those of the nvidia pip wheels that
    PyTorch depends on."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "include", "cusparse.h")):
        return []
    spec = importlib.util.find_spec("nvidia")
    folders = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
    return [
        os.path.join(folder, name, "include")
        for folder in folders
        for name in sorted(os.listdir(folder))
        if os.path.exists(os.path.join(folder, name, "include", "cusparse.h"))
    ]


def im2col_step(batch: int) -> int:
    """The largest divisor of ``batch`` that is <= 64 (its forward asserts batch % step == 0)."""
    return max(d for d in range(1, min(batch, 64) + 1) if batch % d == 0)


def load_deformable_detr(baseline_dir: str, build_dir: str) -> Callable[..., Tensor]:
    """JIT-builds the original op from ``baseline_dir`` (the folder holding models/ops) in
    ``build_dir`` and returns ``f(value, spatial_shapes, level_start_index, sampling_locations,
    attention_weights)``, differentiable, through its own ``MSDeformAttnFunction``.

    Raises FileNotFoundError when ``baseline_dir`` has no models/ops, RuntimeError when CUDA is
    missing or the build fails.
    """
    ops_dir = os.path.join(baseline_dir, "models", "ops")
    if not os.path.isdir(ops_dir):
        raise FileNotFoundError(f"no Deformable DETR ops at {ops_dir} (see ../shared/baselines/README.md)")
    if not torch.cuda.is_available():
        raise RuntimeError("the original Deformable DETR op is CUDA only")
    from torch.utils.cpp_extension import load

    sources = _copy_sources(ops_dir, build_dir)
    extension = load(
        name=_MODULE_NAME,
        sources=sources,
        extra_include_paths=[os.path.join(build_dir, "src"), *_extra_include_paths()],
        extra_cflags=["-O3", "-DWITH_CUDA"],
        extra_cuda_cflags=[
            "-O3",
            "-DWITH_CUDA",
            # its setup.py's flags
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ],
        build_directory=build_dir,
        verbose=False,
    )
    sys.modules[_MODULE_NAME] = extension
    spec = importlib.util.spec_from_file_location(
        "deformable_detr_ms_deform_attn_func", os.path.join(ops_dir, "functions", "ms_deform_attn_func.py")
    )
    functions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(functions)

    def deformable_detr(
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
    ) -> Tensor:
        return functions.MSDeformAttnFunction.apply(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            im2col_step(value.shape[0]),
        )

    return deformable_detr
