"""Peak memory of one call, shared by the benchmarks.

* CUDA: ``torch.cuda.max_memory_allocated`` during the call minus what was allocated before it.
* CPU (Linux): the call runs in a fresh subprocess of the benchmark script
  (``script --memory-probe PAYLOAD``); there the peak resident set (VmHWM) is reset through
  /proc/self/clear_refs once the inputs are built, and the result is VmHWM after the call minus
  the resident set just before it. This counts every page the call touches, allocator caching
  included.
"""

import json
import os
import subprocess
import sys
from typing import Any, Callable, Optional

import torch

__all__ = ["cuda_peak_mib", "report_resident_peak", "subprocess_peak_mib"]


def cuda_peak_mib(run_once: Callable[[], Any]) -> float:
    """Extra CUDA memory (MiB) allocated during ``run_once()``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run_once()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def subprocess_peak_mib(script: str, payload: str) -> Optional[float]:
    """Runs ``script --memory-probe payload`` (whose probe ends in :func:`report_resident_peak`)
    with this process' thread count; returns its peak in MiB, None where /proc/self/clear_refs
    is missing."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    result = subprocess.run(
        [sys.executable, script, "--memory-probe", payload],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def report_resident_peak(run_once: Callable[[], Any]) -> None:
    """Subprocess side: resets VmHWM, calls ``run_once()`` and prints {"peak_mib": ...}."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set (VmHWM) to the current one
    before = _status_bytes("VmRSS")
    run_once()
    print(json.dumps({"peak_mib": (_status_bytes("VmHWM") - before) / 2**20}))
