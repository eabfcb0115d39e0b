"""The Triton kernels without a GPU: their tests (tests/layers/triton_interpreter) under Triton's
interpreter on CPU, in a subprocess started with TRITON_INTERPRET=1, and an ahead-of-time
compilation of both kernels for an sm_90 GPU (what the interpreter cannot check: Triton's type
rules and code generation, bfloat16 included).

The subprocess: triton reads the variable when it is first imported, and setting it in this
process would turn every later Triton kernel of the session (on a GPU machine: the real ones)
into interpreted ones."""

import inspect
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(REPO, "tests", "layers", "triton_interpreter")


def test_triton_kernels_under_the_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("DEPOTR_MSDA_BACKEND", None)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", SUITE, "-q", "-rfEs", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = completed.stdout + completed.stderr
    # A crash prints Python's fault handler (innermost frame first): show it from its start.
    fault = output.find("Fatal Python error")
    assert completed.returncode == 0, output[fault : fault + 6000] if fault >= 0 else output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    # Every test ran: none skipped (e.g. because the kernels were not interpreted after all).
    assert passed and int(passed.group(1)) >= 30 and "skipped" not in summary, summary


def kernel_signature(kernel, dtype: str) -> dict:
    """Triton's signature of a kernel for inputs of ``dtype`` ("fp32", "bf16", ...): pointers
    to it, int64 level tables, a float32 grad_value buffer, int64 sizes, and constexprs."""
    signature = {}
    for name, parameter in inspect.signature(kernel.fn).parameters.items():
        if parameter.annotation is not inspect.Parameter.empty:
            signature[name] = "constexpr"
        elif name in ("shapes_ptr", "starts_ptr"):
            signature[name] = "*i64"
        elif name == "grad_value_ptr":
            signature[name] = "*fp64" if dtype == "fp64" else "*fp32"
        elif name.endswith("_ptr"):
            signature[name] = f"*{dtype}"
        else:
            signature[name] = "i64"
    return signature


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("kernel_name", ["_forward_kernel", "_backward_kernel"], ids=["forward", "backward"])
def test_triton_kernels_compile_for_sm90(kernel_name, dtype, tmp_path, monkeypatch):
    triton = pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile, not a cache hit
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1: triton.jit gave interpreted kernels, nothing to compile")
    try:
        triton.knobs.nvidia.ptxas  # noqa: B018 (the property raises when Triton has no ptxas)
    except RuntimeError as e:
        pytest.skip(f"Triton's NVIDIA backend has no ptxas here ({e})")
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from depotr.layers import ms_deform_attn_triton

    kernel = getattr(ms_deform_attn_triton, kernel_name)
    # The training layout: D = 32 channels, 64 rows per program.
    constexprs = {"BLOCK_R": 64, "BLOCK_D": 32, "ACC": tl.float32}
    source = ASTSource(kernel, kernel_signature(kernel, dtype), constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert compiled.asm["cubin"] and ".entry" in compiled.asm["ptx"]
    if kernel_name == "_backward_kernel":
        assert "atom.global" in compiled.asm["ptx"] or "red.global" in compiled.asm["ptx"]
