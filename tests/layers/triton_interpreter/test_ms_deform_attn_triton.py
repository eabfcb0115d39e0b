"""The Triton kernels of multi-scale deformable attention under Triton's interpreter, on CPU:
through ``ms_deform_attn`` with ``DEPOTR_MSDA_BACKEND=triton`` (operator, autograd, fake kernels),
against the reference at odd shapes, float64 gradcheck, float16 within 1e-2, non-finite inputs.

Triton reads ``TRITON_INTERPRET`` when ``triton.jit`` decorates a function, its own standard
library included (``tl.sum``, ...), i.e. when triton is first imported. These tests therefore run
in a process started with ``TRITON_INTERPRET=1`` (conftest.py collects them only then);
tests/layers/test_ms_deform_attn_triton.py starts it. By hand::

    TRITON_INTERPRET=1 python -m pytest tests/layers/triton_interpreter -q

Tiny shapes: the interpreter runs each program with numpy.
"""

import importlib

import pytest
import torch

from depotr.layers import (
    BACKEND_ENV_VAR,
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_reference,
    msda_backend,
)

from ..test_ms_deform_attn import (
    PARITY_CASES,
    assert_borders_and_outside_match_reference,
    assert_matches_reference,
    assert_non_finite_rule,
    assert_rel_close,
    forward_and_grads,
    make_inputs,
)

msda_op = importlib.import_module("depotr.layers.ms_deform_attn_op")
triton_kernels = importlib.import_module("depotr.layers.ms_deform_attn_triton")


def test_kernels_are_interpreted():
    from triton.runtime.interpreter import InterpretedFunction

    assert triton_kernels.INTERPRETED
    for kernel in (triton_kernels._forward_kernel, triton_kernels._backward_kernel, triton_kernels._sample_point):
        assert isinstance(kernel, InterpretedFunction), kernel


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    """ms_deform_attn runs the interpreted Triton kernels on CPU in every test of this module."""
    monkeypatch.setattr(msda_op, "_CHOICES", {})
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")


class CountingKernel:
    """Stands in for a kernel: counts launches, then launches the kernel itself."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def test_ms_deform_attn_runs_the_interpreted_kernels(monkeypatch):
    kernels = {}
    for name in ("_forward_kernel", "_backward_kernel"):
        kernels[name] = CountingKernel(getattr(triton_kernels, name))
        monkeypatch.setattr(triton_kernels, name, kernels[name])
    inputs = make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2, dtype=torch.float32)
    out = ms_deform_attn(*inputs)
    out.sum().backward()
    assert msda_backend("cpu") == "triton"
    assert kernels["_forward_kernel"].launches == 1 and kernels["_backward_kernel"].launches == 1
    assert inputs[0].grad.dtype == torch.float32 and inputs[3].grad.abs().sum() > 0


@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["float32", "float64"])
@pytest.mark.parametrize("case", PARITY_CASES)
def test_triton_matches_reference(case, dtype, rel):
    assert_matches_reference(ms_deform_attn, case, dtype, rel)


def test_triton_borders_and_outside_match_reference():
    assert_borders_and_outside_match_reference(ms_deform_attn)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(dict(N=1, Lq=2, M=1, D=2, shapes=[(3, 2), (2, 1)], P=2), id="L2P2"),
        pytest.param(dict(N=1, Lq=2, M=2, D=3, shapes=[(2, 3)], P=1), id="L1P1"),
    ],
)
def test_triton_gradcheck(case):
    inputs = make_inputs(**case, dtype=torch.float64, margin=0.2)
    assert torch.autograd.gradcheck(ms_deform_attn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", [PARITY_CASES[1], PARITY_CASES[5]])  # D=30; L=4
def test_triton_float16_within_1e2_of_float64(case):
    # float16 storage, float32 accumulation: the reference sees the same rounded inputs, in float64.
    inputs = tuple(t.detach().half().requires_grad_() if t.is_floating_point() else t for t in make_inputs(**case))
    reference_inputs = tuple(t.detach().double().requires_grad_() if t.is_floating_point() else t for t in inputs)
    grad_output = torch.randn(
        inputs[3].shape[0],
        inputs[3].shape[1],
        inputs[0].shape[2] * inputs[0].shape[3],
        generator=torch.Generator().manual_seed(1),
    ).half()
    out, grads = forward_and_grads(ms_deform_attn, inputs, grad_output)
    ref_out, ref_grads = forward_and_grads(ms_deform_attn_reference, reference_inputs, grad_output.double())
    assert out.dtype == torch.float16 and all(g.dtype == torch.float16 for g in grads)
    assert_rel_close(out.double(), ref_out, 1e-2)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_rel_close(grad.double(), ref_grad, 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_triton_propagates_non_finite_like_reference(dtype):
    assert_non_finite_rule(ms_deform_attn, dtype)


def test_triton_bfloat16_is_refused_by_the_interpreter():
    with pytest.raises(RuntimeError, match="=triton, but on cpu, torch.bfloat16: Triton's interpreter supports"):
        msda_backend("cpu", torch.bfloat16)


def test_triton_opcheck():
    inputs = tuple(t.detach() for t in make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2))
    inputs = tuple(t.requires_grad_(t.is_floating_point()) for t in inputs)
    torch.library.opcheck(torch.ops.depotr.ms_deform_attn_triton_forward.default, inputs)


def test_msdeformattn_with_triton_matches_reference(monkeypatch):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(std=0.1)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 3, 16, generator=generator)
    reference_points = torch.rand(2, 3, 2, 2, generator=generator)
    input_flatten = torch.randn(2, 14, 16, generator=generator)
    args = (query, reference_points, input_flatten, torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 12]))
    results = {}
    for backend in ("triton", "reference"):
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
        module.zero_grad()
        out = module(*args)
        out.square().sum().backward()
        results[backend] = (out.detach(), module.sampling_offsets.weight.grad.clone())
    for actual, expected in zip(results["triton"], results["reference"]):
        assert_rel_close(actual, expected, 1e-5)
