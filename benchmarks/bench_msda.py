#!/usr/bin/env python
# Benchmark of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021):
# depotr's compiled and Triton operators, the F.grid_sample reference and the original Deformable
# DETR kernel at DePOTR's training shapes.
"""Times the backends of ``ms_deform_attn`` and prints a markdown table.

Backends: ``reference`` (F.grid_sample), ``compiled`` (depotr._C: C++ on CPU, CUDA), ``triton``
(CUDA), and ``deformable_detr``, the original Deformable DETR CUDA kernel (float32 / float64),
JIT-built from ``--baseline-dir`` (default: ../shared/baselines/deformable_detr_ops, or shared/
inside the checkout) into a temporary folder by benchmarks/deformable_detr_baseline.py, never
installed; skipped when absent.
Each backend runs where it serves the device and dtype; speedups are against the reference and,
where it ran, against the original kernel.

Shapes: crops 256x192 and 384x288, L=4 levels at strides 8/16/32/64 (ceil division, as stride-2
convs give), M=8 heads, D=32 channels per head, P=4 points; encoder queries (Lq = S) and decoder
queries (Lq = 17 keypoints). Each case runs a warm-up step per backend, then alternates the
backends step by step; a step is a forward and ``out.backward(ones)``, timed separately; the table
gives medians.

Bandwidth: the bytes of :func:`minimum_bytes` (each input read once, each output written once)
over the forward+backward time, a lower bound of what the kernel moves; compare it with the
device's peak (e.g. 3.35 TB/s HBM3 on an H100 SXM) to see how far a kernel is from memory-bound.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one forward+backward minus the
memory allocated before it. On CPU, one forward+backward in a fresh subprocess (Linux): its peak resident
set (VmHWM, reset through /proc/self/clear_refs once the inputs are built) minus its resident set
just before the step; this counts every page the step touches, allocator caching included.

    python benchmarks/bench_msda.py                     # CPU (+ CUDA if present), N = 1, 32
    python benchmarks/bench_msda.py --batch 32 128 --backends compiled triton deformable_detr reference
    python benchmarks/bench_msda.py --batch 128 --crop 256x192
    python benchmarks/bench_msda.py --write-readme benchmarks/README.md
"""

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from deformable_detr_baseline import (  # benchmarks/ is sys.path[0]
    BASELINE_DTYPES,
    DEFAULT_BASELINE_DIR,
    load_deformable_detr,
)
from peak_memory import cuda_peak_mib, report_resident_peak, subprocess_peak_mib
from torch import Tensor

from depotr.layers.ms_deform_attn_op import BACKENDS as OP_BACKENDS

STRIDES = (8, 16, 32, 64)
HEADS, CHANNELS, POINTS = 8, 32, 4
DECODER_QUERIES = 17
# The columns of the table (tools/gpu_check_notes.py reads them by name).
TABLE_HEADER = (
    "| device | crop | N | queries (Lq) | backend | fwd ms | bwd ms | fwd+bwd ms | fwd+bwd GB/s | peak MiB "
    "| vs reference fwd | vs reference bwd | vs reference fwd+bwd | vs original fwd+bwd |\n"
    "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
BASELINE = "deformable_detr"
BACKENDS = ("reference", "compiled", "triton", BASELINE)


@dataclass(frozen=True)
class Case:
    device: str
    crop: tuple[int, int]  # (height, width) in pixels
    batch: int
    queries: str  # "encoder" (Lq = S) or "decoder" (Lq = 17)

    @property
    def spatial_shapes(self) -> list[tuple[int, int]]:
        return [(math.ceil(self.crop[0] / s), math.ceil(self.crop[1] / s)) for s in STRIDES]

    @property
    def num_tokens(self) -> int:
        return sum(h * w for h, w in self.spatial_shapes)

    @property
    def num_queries(self) -> int:
        return self.num_tokens if self.queries == "encoder" else DECODER_QUERIES


def make_inputs(case: Case, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Returns (value, spatial_shapes, level_start_index, sampling_locations, attention_weights),
    float tensors requiring grad; locations mostly inside [0, 1] as after training starts."""
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(case.spatial_shapes, dtype=torch.int64)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
    N, S, Lq, L = case.batch, case.num_tokens, case.num_queries, len(STRIDES)
    value = torch.randn(N, S, HEADS, CHANNELS, generator=generator)
    locations = torch.rand(N, Lq, HEADS, L, POINTS, 2, generator=generator) * 1.1 - 0.05
    weights = torch.rand(N, Lq, HEADS, L, POINTS, generator=generator).softmax(-1)
    tensors = [t.to(case.device, dtype).requires_grad_() for t in (value, locations, weights)]
    return (
        tensors[0],
        spatial_shapes.to(case.device),
        level_start_index.to(case.device),
        tensors[1],
        tensors[2],
    )


def minimum_bytes(case: Case, dtype: torch.dtype) -> int:
    """Bytes one forward+backward must move at the least: every input read once and every
    output written once, in ``dtype``.

    Forward reads value (N S M D), sampling_locations (N Lq M L P 2) and attention_weights
    (N Lq M L P) and writes the output (N Lq M D). Backward reads grad_output and the same three
    inputs and writes their three gradients. Indices and spatial shapes (a few int64) are left
    out, and so are the repeated reads of a value token that several samples touch (caches
    serve them at best), so achieved bandwidth = these bytes / time is a lower bound.
    """
    N, S, Lq, L = case.batch, case.num_tokens, case.num_queries, len(STRIDES)
    value = N * S * HEADS * CHANNELS
    locations = N * Lq * HEADS * L * POINTS * 2
    weights = N * Lq * HEADS * L * POINTS
    output = N * Lq * HEADS * CHANNELS
    forward = value + locations + weights + output
    backward = output + 2 * (value + locations + weights)
    return (forward + backward) * torch.tensor([], dtype=dtype).element_size()


def backend_functions(
    device: str, dtype: torch.dtype, names: tuple[str, ...], baseline: Optional[Callable[..., Tensor]]
) -> dict[str, Callable[..., Tensor]]:
    """The forward functions of the backends in ``names`` that serve ``device`` and ``dtype``
    (reference first); prints why each other one is skipped."""
    functions = {}
    for name in sorted(names, key=lambda n: n != "reference"):
        if name == BASELINE:
            why = None if baseline is not None else "not built (CUDA only; --baseline-dir)"
            if why is None and (device != "cuda" or dtype not in BASELINE_DTYPES):
                why = "its kernels are CUDA float32/float64 only"
            forward = baseline
        else:
            why = OP_BACKENDS[name].unavailable(device, dtype)
            forward = OP_BACKENDS[name].forward
        if why is None:
            functions[name] = forward
        else:
            print(f"skipping {name} on {device} {dtype}: {why}", file=sys.stderr)
    return functions


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_step(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...], device: str) -> tuple[float, float]:
    """Runs one forward and one backward; returns their times in ms."""
    for t in inputs:
        t.grad = None
    synchronize(device)
    t0 = time.perf_counter()
    out = fn(*inputs)
    synchronize(device)
    t1 = time.perf_counter()
    out.backward(torch.ones_like(out))
    synchronize(device)
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1)


def time_case(
    case: Case,
    dtype: torch.dtype,
    functions: dict[str, Callable[..., Tensor]],
    repeats: int,
    max_seconds: float,
) -> dict[str, dict[str, float]]:
    """Median forward, backward and forward+backward times in ms per backend of ``functions``
    (name -> forward). The backends alternate step by step, so that a change in machine load
    affects them alike."""
    inputs = make_inputs(case, dtype)
    times = {backend: {"fwd": [], "bwd": [], "fwd+bwd": []} for backend in functions}
    start = time.perf_counter()
    for step in range(repeats + 1):
        for backend, fn in functions.items():
            fwd, bwd = timed_step(fn, inputs, case.device)
            if step > 0:  # step 0 is the warm-up
                for key, value in (("fwd", fwd), ("bwd", bwd), ("fwd+bwd", fwd + bwd)):
                    times[backend][key].append(value)
        if step >= 3 and time.perf_counter() - start > max_seconds:
            break
    return {
        backend: {key: statistics.median(values) for key, values in by_key.items()} for backend, by_key in times.items()
    }


def _forward_backward(fn: Callable[..., Tensor], inputs: tuple[Tensor, ...]) -> Callable[[], None]:
    def run_once() -> None:
        out = fn(*inputs)
        out.backward(torch.ones_like(out))

    return run_once


def peak_memory_mib(case: Case, backend: str, fn: Callable[..., Tensor], dtype: torch.dtype) -> Optional[float]:
    """Extra memory of one forward+backward (see the module docstring); None if unmeasurable."""
    if case.device == "cuda":
        return cuda_peak_mib(_forward_backward(fn, make_inputs(case, dtype)))
    payload = json.dumps(
        {
            "case": [case.device, list(case.crop), case.batch, case.queries],
            "backend": backend,
            "dtype": str(dtype).removeprefix("torch."),
        }
    )
    return subprocess_peak_mib(__file__, payload)


def memory_probe(payload: str) -> None:
    """Subprocess side of :func:`peak_memory_mib` on CPU: prints {"peak_mib": ...} as JSON."""
    spec = json.loads(payload)
    device, crop, batch, queries = spec["case"]
    case = Case(device, tuple(crop), batch, queries)
    inputs = make_inputs(case, getattr(torch, spec["dtype"]))
    report_resident_peak(_forward_backward(OP_BACKENDS[spec["backend"]].forward, inputs))


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def speedup(baseline: Optional[dict[str, float]], result: dict[str, float], key: str) -> str:
    return "" if baseline is None else f"{baseline[key] / result[key]:.2f}x"


def run(args: argparse.Namespace, baseline: Optional[Callable[..., Tensor]]) -> str:
    dtype = getattr(torch, args.dtype)
    devices = [] if args.cuda_only else ["cpu"]
    devices += ["cuda"] if torch.cuda.is_available() and not args.cpu_only else []
    rows = [TABLE_HEADER]
    print(TABLE_HEADER, flush=True)
    for device in devices:
        functions = backend_functions(device, dtype, tuple(args.backends), baseline)
        if set(functions) <= {"reference"}:
            print(f"skipping {device}: only the reference serves {dtype} there", file=sys.stderr)
            continue
        for crop in args.crop:
            for batch in args.batch:
                for queries in args.queries:
                    case = Case(device, crop, batch, queries)
                    results = time_case(case, dtype, functions, args.repeats, args.max_seconds)
                    for backend, fn in functions.items():
                        results[backend]["peak"] = None if args.no_memory else peak_memory_mib(case, backend, fn, dtype)
                    for backend, r in results.items():
                        reference = results.get("reference") if backend != "reference" else None
                        original = results.get(BASELINE) if backend != BASELINE else None
                        speedups = [speedup(reference, r, k) for k in ("fwd", "bwd", "fwd+bwd")]
                        speedups.append(speedup(original, r, "fwd+bwd"))
                        gb_per_s = minimum_bytes(case, dtype) / (r["fwd+bwd"] * 1e-3) / 1e9
                        row = (
                            f"| {device} | {crop[0]}x{crop[1]} | {batch} | {queries} ({case.num_queries}) | {backend} "
                            f"| {fmt(r['fwd'])} | {fmt(r['bwd'])} | {fmt(r['fwd+bwd'])} | {fmt(gb_per_s, 2)} "
                            f"| {fmt(r['peak'])} "
                            f"| {' | '.join(speedups)} |"
                        )
                        rows.append(row)
                        print(row, flush=True)
    return "\n".join(rows)


def build_baseline(args: argparse.Namespace, build_dir: str) -> Optional[Callable[..., Tensor]]:
    """The original Deformable DETR op when asked for and buildable here, else None (said why)."""
    if BASELINE not in args.backends or args.cpu_only or not torch.cuda.is_available():
        return None
    try:
        print(
            f"JIT-building the original Deformable DETR op from {args.baseline_dir} into {build_dir}",
            file=sys.stderr,
        )
        return load_deformable_detr(args.baseline_dir, build_dir)
    except (FileNotFoundError, RuntimeError, OSError) as e:
        print(f"skipping {BASELINE}: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def readme_section(table: str, args: argparse.Namespace) -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() and not args.cpu_only else ""
    return (
        f"\n## ms_deform_attn, {time.strftime('%Y-%m-%d')}\n\n"
        f"`python benchmarks/bench_msda.py {' '.join(sys.argv[1:])}`: torch {torch.__version__}, {args.dtype}, "
        f"{torch.get_num_threads()} CPU threads ({cpu}){gpu}. M={HEADS}, D={CHANNELS}, P={POINTS}, L=4 levels at "
        f"strides {'/'.join(map(str, STRIDES))}. Median times after a warm-up step. GB/s: the minimum bytes "
        "(each input read once, each output written once; see `minimum_bytes`) over the fwd+bwd time. Speedups: the "
        "reference's (the original Deformable DETR kernel's) time over the backend's. Peak memory: extra memory of one "
        "forward+backward (CUDA: max_memory_allocated; CPU: peak RSS of a fresh process, reset once the inputs "
        "are built, minus its RSS then).\n\n" + table + "\n"
    )


def parse_crop(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes N (e.g. 1 32 128)")
    parser.add_argument("--crop", type=parse_crop, nargs="+", default=[(256, 192), (384, 288)], help="HxW crops")
    parser.add_argument("--queries", nargs="+", choices=["encoder", "decoder"], default=["encoder", "decoder"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case and backend (after a warm-up)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop repeating after this (min. 3 steps)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--cpu-only", action="store_true", help="skip CUDA even if available")
    devices.add_argument("--cuda-only", action="store_true", help="skip the CPU")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="backends to time, where they serve",
    )
    parser.add_argument("--baseline-dir", default=DEFAULT_BASELINE_DIR, help="folder with the original op's models/ops")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--write-readme", metavar="PATH", help="append the table as a section to this markdown file")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    with tempfile.TemporaryDirectory(prefix="deformable_detr_build_") as build_dir:
        table = run(args, build_baseline(args, build_dir))
    if args.write_readme:
        with open(args.write_readme, "a") as f:
            f.write(readme_section(table, args))
        print(f"appended to {args.write_readme}")


if __name__ == "__main__":
    main()
