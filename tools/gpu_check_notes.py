#!/usr/bin/env python
# Part of tools/gpu_check.sh (issue 14): turns the results of a GPU check into a section of
# benchmarks/msda_gpu_notes.md.
"""Writes the figures of a ``tools/gpu_check.sh`` run into the MSDA GPU notes, atomically.

    python tools/gpu_check_notes.py --results DIR --device "NVIDIA H200" [--notes benchmarks/msda_gpu_notes.md]

DIR is the script's results folder: ``steps.tsv`` (step, status, seconds per line), one
``<step>.log`` per step, ``bench_<dtype>.md`` (bench_msda.py --write-readme sections) and
``train/`` (the training run's OUTPUT_DIR: metrics.json, log.txt). The section it writes (between
``<!-- gpu_check:start -->`` and ``<!-- gpu_check:end -->``, replaced if there, else appended)
gives the device and versions, each step's status and time, check_msda_cuda's tables, the
benchmark tables, the training figures, and the issue's performance targets evaluated on the
benchmark rows. The notes file is replaced in one ``os.replace``: it is never half-written.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "DePOTR"))

from depotr.file_io import atomic_write  # noqa: E402  (after the path set-up)

START, END = "<!-- gpu_check:start -->", "<!-- gpu_check:end -->"
DTYPES = ("float32", "bfloat16", "float16")
TRAIN_STEP = "train"


def read(path: str) -> Optional[str]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def steps_table(results: str) -> tuple[str, dict[str, str]]:
    """The markdown table of steps.tsv and {step: status}."""
    rows, status = ["| step | status | seconds |", "|---|---|---:|"], {}
    for line in (read(os.path.join(results, "steps.tsv")) or "").splitlines():
        name, state, seconds = line.split("\t")
        status[name] = state
        rows.append(f"| {name} | {state} | {seconds} |")
    return "\n".join(rows), status


# Lines of tools/check_msda_cuda.py's output kept besides its tables.
_CHECK_LINES = (
    "torch ",
    "gradcheck ",
    "automatic backend ",
    "check_msda_cuda:",
    "all checks passed",
    "SOME CHECKS FAILED",
)


def check_summary(text: str) -> str:
    """The tables and result lines of check_msda_cuda.py's output (not build or warning noise)."""
    kept = []
    for line in text.splitlines():
        if line.startswith("|") or line.startswith(_CHECK_LINES):
            kept.append(line)
        elif kept and kept[-1] != "":
            kept.append("")
    return "\n".join(kept).strip()


def bench_rows(text: str, dtype: str) -> list[dict[str, str]]:
    """The rows of bench_msda.py tables in ``text`` as {column: cell}, with "dtype" added."""
    rows, header = [], None
    for line in text.splitlines():
        if line.startswith("| device |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif header and line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append(dict(zip(header, cells), dtype=dtype))
    return rows


def ratio(cell: str) -> Optional[float]:
    return float(cell.rstrip("x")) if cell and cell not in ("n/a",) else None


def targets_table(rows: list[dict[str, str]]) -> str:
    """The issue's targets, evaluated on the CUDA rows of the benchmark at N in {32, 128}: our
    backends >= 1.5x the original kernel (float32) and >= 5x the reference, bf16/fp16 faster
    than fp32; bandwidth as reported."""
    lines = [
        "| target | backend | N | queries | measured | met |",
        "|---|---|---:|---|---:|---|",
    ]
    ours = [r for r in rows if r["device"] == "cuda" and r["backend"] in ("compiled", "triton")]
    fp32 = {(r["backend"], r["N"], r["queries (Lq)"]): r for r in ours if r["dtype"] == "float32"}
    for r in ours:
        key = (r["backend"], r["N"], r["queries (Lq)"])
        checks = []
        if r["dtype"] == "float32":
            checks.append((">= 1.5x original (fp32)", ratio(r["vs original fwd+bwd"]), 1.5))
        checks.append((f">= 5x reference ({r['dtype']})", ratio(r["vs reference fwd+bwd"]), 5.0))
        if r["dtype"] != "float32" and key in fp32:
            speedup = float(fp32[key]["fwd+bwd ms"]) / float(r["fwd+bwd ms"])
            checks.append((f"{r['dtype']} faster than fp32", speedup, 1.0))
        for name, value, minimum in checks:
            measured = "not measured" if value is None else f"{value:.2f}x"
            met = "—" if value is None else ("yes" if value >= minimum else "**no**")
            lines.append(f"| {name} | {r['backend']} | {r['N']} | {r['queries (Lq)']} | {measured} | {met} |")
    if len(lines) == 2:
        return "No CUDA benchmark rows: no target could be evaluated."
    return "\n".join(lines) + (
        "\n\nAchieved bandwidth: the `fwd+bwd GB/s` column of the benchmark tables (minimum bytes "
        "over time; compare with the device's peak)."
    )


def training_summary(results: str, status: str) -> str:
    """Loss, time per iteration, peak memory and MSDA backend warnings of the training run."""
    train = os.path.join(results, TRAIN_STEP)
    metrics = [
        json.loads(line) for line in (read(os.path.join(train, "metrics.json")) or "").splitlines() if line.strip()
    ]
    losses = [(m["iteration"], m["total_loss"]) for m in metrics if "total_loss" in m]
    times = [m["time"] for m in metrics if "time" in m]
    log = read(os.path.join(train, "log.txt")) or read(os.path.join(results, f"{TRAIN_STEP}.log")) or ""
    memory = re.findall(r"max_mem: (\d+)M", log)
    fallbacks = [line.strip() for line in log.splitlines() if "ms_deform_attn on " in line]
    lines = [f"Status: {status}."]
    if losses:
        lines.append(
            f"total_loss {losses[0][1]:.4g} (iteration {losses[0][0]}) -> {losses[-1][1]:.4g} "
            f"(iteration {losses[-1][0]})."
        )
    if times:
        lines.append(f"Time per iteration (Detectron2's windowed median): {statistics.median(times):.3f} s.")
    if memory:
        lines.append(f"Peak CUDA memory: {max(int(m) for m in memory)} MiB.")
    lines.append(
        "MSDA backend: " + ("; ".join(fallbacks) if fallbacks else "the compiled kernel (no fallback warning).")
    )
    return " ".join(lines)


def versions() -> str:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, Triton {triton_version}, "
        f"Python {platform.python_version()}"
    )


def render(results: str, device: str) -> str:
    steps, status = steps_table(results)
    check = read(os.path.join(results, "check_msda_cuda.log")) or ""
    bench_text, rows = [], []
    for dtype in DTYPES:
        text = read(os.path.join(results, f"bench_{dtype}.md"))
        if text is not None:
            bench_text.append(text.strip())
            rows += bench_rows(text, dtype)
    parts = [
        START,
        f"## GPU check, {time.strftime('%Y-%m-%d')}: {device}",
        "",
        f"`bash tools/gpu_check.sh` on {device} ({versions()}). Every figure below is from that run.",
        "",
        steps,
        "",
        "### Parity, gradcheck, backend choice (tools/check_msda_cuda.py)",
        "",
        check_summary(check) or "No output (see the steps table).",
        "",
        "### Performance targets",
        "",
        targets_table(rows),
        "",
        "### Benchmark (benchmarks/bench_msda.py)",
        "",
        "\n\n".join(bench_text) or "No benchmark output (see the steps table).",
        "",
        "### 20-iteration AMP training run (configs/depotr_hm_r50.yaml, synthetic data)",
        "",
        training_summary(results, status.get(TRAIN_STEP, "not run")),
        END,
    ]
    return "\n".join(parts)


def update_notes(notes: str, section: str) -> None:
    """Replaces the gpu_check section of ``notes`` (or appends one), in one atomic write."""
    text = read(notes) or ""
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write(notes, lambda f: f.write(text.encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="the results folder of tools/gpu_check.sh")
    parser.add_argument("--device", required=True, help="the GPU's name")
    parser.add_argument("--notes", default=os.path.join(REPO, "benchmarks", "msda_gpu_notes.md"))
    args = parser.parse_args()
    update_notes(args.notes, render(args.results, args.device))
    print(f"wrote the GPU check section of {args.notes}")


if __name__ == "__main__":
    main()
