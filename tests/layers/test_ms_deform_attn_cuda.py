"""CUDA tests of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021): the
compiled CUDA kernel against the float64 reference, in float32 / float16 / bfloat16, and
gradcheck in float64. Each test skips without a GPU or without a CUDA build of depotr._C."""
import pytest
import torch
from .test_ms_deform_attn import PARITY_CASES, assert_rel_close, forward_and_grads, make_inputs

from depotr.layers import (
    BACKEND_ENV_VAR,
    MSDeformAttn,
    ms_deform_attn,
    ms_deform_attn_reference,
    msda_backend,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_compiled_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or msda_backend("cuda") != "compiled",
    reason="needs a CUDA device and depotr._C built with CUDA (FORCE_CUDA=1 python setup.py build_ext --inplace)",
)


def to_device(inputs, device, dtype):
    """Copies make_inputs' tensors to device; float ones to dtype, requiring grad."""
    return tuple(
        t.detach().to(device, dtype).requires_grad_() if t.is_floating_point() else t.to(device)
        for t in inputs
    )


def compiled_op(*inputs):
    return torch.ops.depotr.ms_deform_attn_forward(*inputs)


@requires_compiled_cuda
@pytest.mark.parametrize(
    "dtype,rel",
    [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 1e-2), (torch.float64, 1e-12)],
    ids=["float32", "float16", "bfloat16", "float64"],
)
@pytest.mark.parametrize("case", PARITY_CASES)
def test_cuda_matches_float64_reference(case, dtype, rel):
    inputs = to_device(make_inputs(**case), "cuda", dtype)
    # The reference sees the same (rounded) inputs, in float64.
    ref_inputs = to_device(inputs, "cuda", torch.float64)
    grad_output = torch.randn(case["N"], case["Lq"], case["M"] * case["D"], device="cuda").to(dtype)
    out, grads = forward_and_grads(compiled_op, inputs, grad_output)
    ref_out, ref_grads = forward_and_grads(
        ms_deform_attn_reference, ref_inputs, grad_output.double()
    )
    assert_rel_close(out.double(), ref_out, rel)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.dtype == dtype
        assert_rel_close(grad.double(), ref_grad, rel)


@requires_compiled_cuda
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(dict(N=2, Lq=3, M=2, D=3, shapes=[(3, 4), (2, 2)], P=2), id="L2"),
        pytest.param(dict(N=1, Lq=2, M=1, D=40, shapes=[(5, 3)], P=1), id="L1P1D40"),
    ],
)
def test_cuda_gradcheck(case, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "compiled")
    inputs = to_device(make_inputs(**case, margin=0.2), "cuda", torch.float64)
    assert torch.autograd.gradcheck(ms_deform_attn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@requires_compiled_cuda
def test_cuda_opcheck():
    inputs = to_device(
        make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2), "cuda", torch.float32
    )
    torch.library.opcheck(torch.ops.depotr.ms_deform_attn_forward.default, inputs)


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
