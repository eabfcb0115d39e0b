#!/usr/bin/env python
# Checks the CUDA kernel of multi-scale deformable attention (Deformable DETR, Zhu et al.,
# ICLR 2021) on a GPU machine that has PyTorch only (no Detectron2, no pytest).
"""Parity, gradcheck, backend choice and timing of depotr's CUDA ``ms_deform_attn`` kernels:
the compiled CUDA kernel and the Triton kernels.

Run from the repository root on a machine with a CUDA GPU and PyTorch::

    python tools/check_msda_cuda.py            # uses depotr._C if built with CUDA, else JIT-builds it
    python tools/check_msda_cuda.py --jit      # always JIT-builds the kernels from depotr/layers/csrc

1. Parity, per backend: forward and the three gradients in float32 / float16 / bfloat16 against
   the float64 reference on the same (rounded) inputs, N in {0, 1, 67}, encoder and decoder
   queries at a 256x192 crop; max abs error / max |reference| below 1e-5 (float32) or 1e-2
   (float16, bfloat16).
2. ``torch.autograd.gradcheck`` in float64 on a small case, per backend.
3. The automatic choice: the compiled kernel passes its self-check in every dtype.
4. Timing at the training shapes (benchmarks/bench_msda.py, N=32): each backend vs reference,
   medians of up to 20 steps with torch.cuda.synchronize around each forward and backward.

A backend that is unavailable (no CUDA build of depotr._C, no Triton) counts as a failure.
Prints markdown tables. Exit code 0 if every check passes, 1 if one fails, 2 without a CUDA device.
"""

import argparse
import glob
import importlib
import os
import subprocess
import sys
import types

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(REPO, "projects", "DePOTR", "depotr")
CSRC_DIR = os.path.join(PACKAGE_DIR, "layers", "csrc")
TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# Importing the depotr package without running depotr/__init__.py (which needs Detectron2).
STUB_PACKAGE = (
    "import sys, types\n"
    "package = types.ModuleType('depotr')\n"
    "package.__path__ = [{path!r}]\n"
    "sys.modules['depotr'] = package\n"
)


def installed_extension_has_cuda() -> bool:
    """Whether depotr._C exists and has CUDA kernels, probed in a subprocess so that this process
    can still JIT-load the kernels (one library may register the depotr namespace)."""
    code = STUB_PACKAGE.format(path=PACKAGE_DIR) + (
        "import torch\n"
        "import depotr._C\n"
        "print(torch.ops.depotr.ms_deform_attn_forward.default.has_kernel_for_dispatch_key('CUDA'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip().endswith("True")


def jit_load_extension() -> None:
    """Builds the CPU and CUDA kernels with torch.utils.cpp_extension.load and registers them."""
    from torch.utils.cpp_extension import load

    sources = sorted(glob.glob(os.path.join(CSRC_DIR, "**", "*.cpp"), recursive=True))
    sources += sorted(glob.glob(os.path.join(CSRC_DIR, "**", "*.cu"), recursive=True))
    print(
        f"JIT-building {len(sources)} sources from {CSRC_DIR} (takes a few minutes the first time)",
        flush=True,
    )
    load(
        name="depotr_msda_jit",
        sources=sources,
        extra_include_paths=[CSRC_DIR],
        extra_cflags=["-O3", "-DWITH_CUDA", "-fopenmp"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-lineinfo", "-DWITH_CUDA"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )


def import_layers(jit: bool) -> types.ModuleType:
    """Registers the CUDA kernels (installed or JIT-built) and imports depotr.layers."""
    if jit or not installed_extension_has_cuda():
        jit_load_extension()
    exec(STUB_PACKAGE.format(path=PACKAGE_DIR), {})
    return importlib.import_module("depotr.layers")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 for empty tensors)."""
    if expected.numel() == 0:
        return 0.0
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def check_parity(layers, bench, backends: list[str], dtypes: list[torch.dtype], batches: list[int]) -> bool:
    print("\n| backend | dtype | N | queries | output | grad value | grad locations | grad weights | tolerance | ok |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    all_ok = True
    for backend in backends:
        forward = layers.ms_deform_attn_op.BACKENDS[backend].forward
        for dtype in dtypes:
            for batch in batches:
                for queries in ("encoder", "decoder"):
                    case = bench.Case("cuda", (256, 192), batch, queries)
                    inputs = bench.make_inputs(case, dtype)
                    ref_inputs = tuple(
                        t.detach().double().requires_grad_() if t.is_floating_point() else t for t in inputs
                    )
                    out = forward(*inputs)
                    ref_out = layers.ms_deform_attn_reference(*ref_inputs)
                    # rounded to dtype; the reference gets the same values
                    grad_output = torch.randn_like(out)
                    grads = torch.autograd.grad(out, (inputs[0], inputs[3], inputs[4]), grad_output)
                    ref_grads = torch.autograd.grad(
                        ref_out, (ref_inputs[0], ref_inputs[3], ref_inputs[4]), grad_output.double()
                    )
                    errors = [relative_error(out, ref_out)] + [relative_error(g, r) for g, r in zip(grads, ref_grads)]
                    ok = all(e <= TOLERANCES[dtype] for e in errors) and all(g.dtype == dtype for g in grads)
                    all_ok &= ok
                    cells = " | ".join(f"{e:.1e}" for e in errors)
                    print(
                        f"| {backend} | {str(dtype)[6:]} | {batch} | {queries} | {cells} | "
                        f"{TOLERANCES[dtype]:.0e} | {'yes' if ok else 'FAIL'} |",
                        flush=True,
                    )
    return all_ok


def check_gradcheck(layers, backend: str) -> bool:
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[3, 4], [2, 2]], device="cuda")
    starts = torch.tensor([0, 12], device="cuda")
    N, Lq, M, D, L, P = 2, 3, 2, 5, 2, 2
    value = torch.randn(N, 16, M, D, generator=generator, dtype=torch.float64)
    locations = torch.rand(N, Lq, M, L, P, 2, generator=generator, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(N, Lq, M, L, P, generator=generator, dtype=torch.float64)
    value, locations, weights = (t.cuda().requires_grad_() for t in (value, locations, weights))
    ok = torch.autograd.gradcheck(
        layers.ms_deform_attn_op.BACKENDS[backend].forward,
        (value, spatial_shapes, starts, locations, weights),
        eps=1e-6,
        atol=1e-5,
        rtol=1e-4,
        raise_exception=False,
    )
    print(f"\ngradcheck {backend} (float64, value / sampling_locations / attention_weights): {'ok' if ok else 'FAIL'}")
    return ok


def check_choice(layers, dtypes: list[torch.dtype]) -> bool:
    """The automatic choice on this GPU: the compiled kernel passes its self-check in every dtype
    (else ms_deform_attn would fall back, with a warning)."""
    ok = True
    print()
    for dtype in dtypes:
        chosen = layers.msda_backend("cuda", dtype)
        ok &= chosen == "compiled"
        print(f"automatic backend on cuda, {dtype}: {chosen}{'' if chosen == 'compiled' else ' (FAIL)'}")
    return ok


def report_timing(bench, batch: int, dtypes: list[torch.dtype], backends: list[str]) -> None:
    print("\n| dtype | queries (Lq) | backend | fwd ms | bwd ms | fwd+bwd ms | speedup fwd+bwd |")
    print("|---|---|---|---:|---:|---:|---:|")
    for dtype in dtypes:
        functions = bench.backend_functions("cuda", dtype, ("reference", *backends), None)
        for queries in ("encoder", "decoder"):
            case = bench.Case("cuda", (256, 192), batch, queries)
            times = bench.time_case(case, dtype, functions, repeats=20, max_seconds=10.0)
            for backend, t in times.items():
                speedup = f"{times['reference']['fwd+bwd'] / t['fwd+bwd']:.1f}x" if backend != "reference" else ""
                print(
                    f"| {str(dtype)[6:]} | {queries} ({case.num_queries}) | {backend} | {t['fwd']:.2f} | "
                    f"{t['bwd']:.2f} | {t['fwd+bwd']:.2f} | {speedup} |",
                    flush=True,
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jit", action="store_true", help="JIT-build the kernels even if depotr._C has CUDA")
    parser.add_argument("--batch", type=int, nargs="+", default=[0, 1, 67], help="batch sizes of the parity check")
    parser.add_argument("--timing-batch", type=int, default=32, help="batch size of the timing (0: no timing)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "check_msda_cuda: no CUDA device visible to PyTorch; run this on a GPU machine.",
            file=sys.stderr,
        )
        return 2
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
    layers = import_layers(args.jit)
    ok = True
    backends = []
    for backend in ("compiled", "triton"):
        why = layers.ms_deform_attn_op.BACKENDS[backend].unavailable("cuda", torch.float32)
        if why is None:
            backends.append(backend)
        else:  # both must be there on a GPU machine
            print(f"check_msda_cuda: the {backend} backend is unavailable: {why}", file=sys.stderr)
            ok = False
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    bench = importlib.import_module("bench_msda")
    dtypes = list(TOLERANCES)
    ok &= check_parity(layers, bench, backends, dtypes, args.batch)
    for backend in backends:
        ok &= check_gradcheck(layers, backend)
    ok &= check_choice(layers, dtypes)
    if args.timing_batch:
        report_timing(bench, args.timing_batch, dtypes, backends)
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
