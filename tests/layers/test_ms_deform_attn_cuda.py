"""CUDA tests of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021): the
compiled CUDA kernel and the Triton kernels against the float64 reference, in float32 / float16 /
bfloat16, gradcheck in float64, the non-finite rule, and the self-check that chooses between
them. Each test skips without a GPU, or without the backend it runs (a CUDA build of depotr._C;
Triton)."""

import importlib

import pytest
import torch

from depotr.layers import (
    BACKEND_ENV_VAR,
    MSDeformAttn,
    ms_deform_attn_reference,
    msda_backend,
)

from .test_ms_deform_attn import (
    PARITY_CASES,
    assert_non_finite_rule,
    assert_rel_close,
    forward_and_grads,
    make_inputs,
)

msda_op = importlib.import_module("depotr.layers.ms_deform_attn_op")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def backend_on_cuda(name: str):
    """Skip mark for a backend that cannot serve CUDA float32 here (checked without running it:
    these tests must fail, not skip, when the backend is there but wrong)."""
    why = "needs a CUDA device"
    if torch.cuda.is_available():
        why = msda_op.BACKENDS[name].unavailable("cuda", torch.float32)
    return pytest.mark.skipif(why is not None, reason=f"{name}: {why}")


requires_compiled_cuda = backend_on_cuda("compiled")
KERNELS = [
    pytest.param(msda_op.BACKENDS["compiled"].forward, id="compiled", marks=requires_compiled_cuda),
    pytest.param(msda_op.BACKENDS["triton"].forward, id="triton", marks=backend_on_cuda("triton")),
]


@pytest.fixture(autouse=True)
def fresh_backend_choices(monkeypatch):
    monkeypatch.setattr(msda_op, "_CHOICES", {})


def to_device(inputs, device, dtype):
    """Copies make_inputs' tensors to device; float ones to dtype, requiring grad."""
    return tuple(
        t.detach().to(device, dtype).requires_grad_() if t.is_floating_point() else t.to(device) for t in inputs
    )


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize(
    "dtype,rel",
    [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 1e-2), (torch.float64, 1e-12)],
    ids=["float32", "float16", "bfloat16", "float64"],
)
@pytest.mark.parametrize("case", PARITY_CASES)
def test_cuda_matches_float64_reference(case, dtype, rel, fn):
    inputs = to_device(make_inputs(**case), "cuda", dtype)
    # The reference sees the same (rounded) inputs, in float64.
    ref_inputs = to_device(inputs, "cuda", torch.float64)
    grad_output = torch.randn(case["N"], case["Lq"], case["M"] * case["D"], device="cuda").to(dtype)
    out, grads = forward_and_grads(fn, inputs, grad_output)
    ref_out, ref_grads = forward_and_grads(ms_deform_attn_reference, ref_inputs, grad_output.double())
    assert out.dtype == dtype
    assert_rel_close(out.double(), ref_out, rel)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.dtype == dtype
        assert_rel_close(grad.double(), ref_grad, rel)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(dict(N=2, Lq=3, M=2, D=3, shapes=[(3, 4), (2, 2)], P=2), id="L2"),
        pytest.param(dict(N=1, Lq=2, M=1, D=40, shapes=[(5, 3)], P=1), id="L1P1D40"),
    ],
)
def test_cuda_gradcheck(case, fn):
    inputs = to_device(make_inputs(**case, margin=0.2), "cuda", torch.float64)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_cuda_propagates_non_finite_like_reference(dtype, fn):
    # The CPU reference defines the rule (grid_sample's CUDA backward need not give the same
    # non-finite gradients).
    assert_non_finite_rule(fn, dtype, device="cuda")


@requires_cuda
@pytest.mark.parametrize("name", ["compiled", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_backend_passes_its_self_check(name, dtype):
    if msda_op.BACKENDS[name].unavailable("cuda", dtype) is not None:
        pytest.skip(msda_op.BACKENDS[name].unavailable("cuda", dtype))
    device = torch.device("cuda", torch.cuda.current_device())
    assert msda_op._self_check(msda_op.BACKENDS[name], device, dtype) is None


@requires_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_compiled_kernel_is_chosen_on_cuda_without_warning(dtype, monkeypatch, caplog):
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    with caplog.at_level("WARNING", logger=msda_op.__name__):
        assert msda_backend("cuda", dtype) == "compiled"
    assert not caplog.records


@pytest.mark.parametrize(
    "op",
    [
        pytest.param("ms_deform_attn_forward", id="compiled", marks=requires_compiled_cuda),
        pytest.param("ms_deform_attn_triton_forward", id="triton", marks=backend_on_cuda("triton")),
    ],
)
def test_cuda_opcheck(op):
    inputs = to_device(make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2), "cuda", torch.float32)
    torch.library.opcheck(getattr(torch.ops.depotr, op).default, inputs)


@requires_cuda
def test_cuda_msdeformattn_matches_cpu():
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    spatial_shapes = torch.tensor([[6, 4], [3, 2]])
    starts = torch.tensor([0, 24])
    query, input_flatten = torch.randn(2, 5, 32), torch.randn(2, 30, 32)
    reference_points = torch.rand(2, 5, 2, 2)
    args = (query, reference_points, input_flatten, spatial_shapes, starts)
    expected = module(*args)
    out = module.cuda()(*(t.cuda() for t in args))
    assert_rel_close(out.cpu(), expected.detach(), 1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("fn", KERNELS)
def test_kernels_run_on_the_inputs_device_not_the_current_one(fn):
    # Triton launches on the current device: tensors on cuda:1 while cuda:0 is current must still
    # be served on cuda:1 (the CUDA kernel has a device guard; the Triton wrappers set the device).
    inputs = to_device(make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2), "cuda:1", torch.float32)
    ref_inputs = to_device(inputs, "cpu", torch.float64)
    with torch.cuda.device(0):
        out, grads = forward_and_grads(fn, inputs, torch.ones(2, 3, 8, device="cuda:1"))
        torch.cuda.synchronize(1)
    ref_out, ref_grads = forward_and_grads(
        ms_deform_attn_reference, ref_inputs, torch.ones(2, 3, 8, dtype=torch.float64)
    )
    assert out.device == torch.device("cuda", 1)
    assert_rel_close(out.cpu().double(), ref_out, 1e-5)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_rel_close(grad.cpu().double(), ref_grad, 1e-5)
