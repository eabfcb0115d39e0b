"""CPU tests of multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021):
the F.grid_sample reference against hand arithmetic, the compiled C++ kernel against the
reference, validation errors, backend choice, MSDeformAttn, torch.library / torch.compile."""

import importlib
import os
import subprocess
import sys

import pytest
import torch

from depotr.layers import (
    BACKEND_ENV_VAR,
    MSDeformAttn,
    mixed_precision_msda_inputs,
    ms_deform_attn,
    ms_deform_attn_reference,
    msda_backend,
)

msda_op = importlib.import_module("depotr.layers.ms_deform_attn_op")


@pytest.fixture(autouse=True)
def fresh_backend_choices(monkeypatch):
    """Each test chooses MSDA backends afresh (tests change the environment they depend on)."""
    monkeypatch.setattr(msda_op, "_CHOICES", {})


requires_compiled_cpu = pytest.mark.skipif(
    msda_backend("cpu") != "compiled",
    reason="depotr._C was not built (python setup.py build_ext --inplace)",
)


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    return torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))


def make_inputs(N, Lq, M, D, shapes, P, dtype=torch.float64, margin=0.1, seed=0):
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights); the float
    tensors require grad; locations uniform in [-margin, 1 + margin]."""
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    S, L = int(spatial_shapes.prod(1).sum()), len(shapes)
    value = torch.randn(N, S, M, D, generator=generator, dtype=dtype)
    locations = torch.rand(N, Lq, M, L, P, 2, generator=generator, dtype=dtype) * (1 + 2 * margin) - margin
    weights = torch.rand(N, Lq, M, L, P, generator=generator, dtype=dtype)
    value, locations, weights = (t.requires_grad_() for t in (value, locations, weights))
    return value, spatial_shapes, level_start_index(spatial_shapes), locations, weights


def forward_and_grads(fn, inputs, grad_output=None):
    """Output of fn(*inputs) and the gradients of <output, grad_output> w.r.t. value,
    sampling_locations and attention_weights."""
    out = fn(*inputs)
    if grad_output is None:
        grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad(out, (inputs[0], inputs[3], inputs[4]), grad_output, allow_unused=True)
    return out, grads


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """max |actual - expected| <= rel * max |expected| (shapes and dtypes equal)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if expected.numel() == 0:
        return
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert error <= rel * max(scale, 1e-12), f"max abs error {error:.3e} vs max |expected| {scale:.3e}"


def compiled_op(*inputs):
    return torch.ops.depotr.ms_deform_attn_forward(*inputs)


BACKEND_FNS = [
    pytest.param(ms_deform_attn_reference, id="reference"),
    pytest.param(compiled_op, id="compiled", marks=requires_compiled_cpu),
]


@pytest.mark.parametrize("fn", BACKEND_FNS)
def test_hand_computed_values(fn):
    # One 2x2 level, value = [[1, 2], [3, 4]] (channel 0) and 10x that (channel 1). Pixel
    # coordinate = loc * 2 - 0.5, so loc 0.25 / 0.75 are the pixel centres.
    value = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]], dtype=torch.float64).view(1, 4, 1, 2)
    spatial_shapes = torch.tensor([[2, 2]])
    locations = torch.tensor(
        [
            [0.5, 0.5],  # centre of the four pixels: (1 + 2 + 3 + 4) / 4 = 2.5
            [0.375, 0.75],  # x = 0.25 px, y = 1 px (row 1): 0.75 * 3 + 0.25 * 4 = 3.25
            [0.0, 0.0],  # (-0.5, -0.5) px: a quarter of pixel (0, 0) = 0.25
            [1.0, 1.0],  # (1.5, 1.5) px: a quarter of pixel (1, 1) = 1.0
            [1.5, 0.5],  # x = 2.5 px, fully right of the map: 0
            [0.25, -0.75],  # y = -2 px, fully above the map: 0
        ],
        dtype=torch.float64,
    ).view(1, 6, 1, 1, 1, 2)
    weights = torch.full((1, 6, 1, 1, 1), 2.0, dtype=torch.float64)
    out = fn(value, spatial_shapes, level_start_index(spatial_shapes), locations, weights)
    expected = 2.0 * torch.tensor([2.5, 3.25, 0.25, 1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(out, torch.stack([expected, 10 * expected], -1).view(1, 6, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fn", BACKEND_FNS)
def test_hand_computed_sum_over_levels_and_points(fn):
    # Two levels (1x1 with value 5, 1x2 with values [1, 3]); query 0 samples level 0 at its centre
    # (weight 0.5) and level 1 at x = 0.5 px between its pixels (weight 2): 0.5 * 5 + 2 * 2 = 6.5.
    value = torch.tensor([5.0, 1.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    spatial_shapes = torch.tensor([[1, 1], [1, 2]])
    locations = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64).view(1, 1, 1, 2, 1, 2)
    weights = torch.tensor([0.5, 2.0], dtype=torch.float64).view(1, 1, 1, 2, 1)
    out = fn(value, spatial_shapes, level_start_index(spatial_shapes), locations, weights)
    torch.testing.assert_close(out, torch.tensor([[[6.5]]], dtype=torch.float64), rtol=0, atol=1e-12)


PARITY_CASES = [
    pytest.param(dict(N=2, Lq=5, M=2, D=8, shapes=[(6, 5), (3, 3)], P=3), id="base"),
    pytest.param(dict(N=2, Lq=4, M=3, D=30, shapes=[(5, 7), (2, 3)], P=2), id="D30"),
    pytest.param(dict(N=1, Lq=3, M=2, D=71, shapes=[(4, 4), (2, 2)], P=2), id="D71"),
    pytest.param(dict(N=2, Lq=6, M=2, D=4, shapes=[(5, 4), (3, 2)], P=1), id="P1"),
    pytest.param(dict(N=2, Lq=5, M=2, D=4, shapes=[(7, 9)], P=4), id="L1"),
    pytest.param(dict(N=2, Lq=5, M=2, D=8, shapes=[(8, 6), (4, 3), (2, 2), (1, 1)], P=4), id="L4"),
    pytest.param(dict(N=2, Lq=1, M=2, D=8, shapes=[(6, 5), (3, 3)], P=3), id="Lq1"),
    pytest.param(dict(N=0, Lq=5, M=2, D=8, shapes=[(6, 5), (3, 3)], P=3), id="N0"),
    pytest.param(dict(N=2, Lq=0, M=2, D=8, shapes=[(6, 5), (3, 3)], P=3), id="Lq0"),
    pytest.param(dict(N=67, Lq=3, M=2, D=4, shapes=[(4, 3), (2, 2)], P=2), id="N67"),
]


@requires_compiled_cpu
@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["float32", "float64"])
@pytest.mark.parametrize("case", PARITY_CASES)
def test_compiled_matches_reference(case, dtype, rel):
    assert_matches_reference(compiled_op, case, dtype, rel)


def assert_matches_reference(fn, case: dict, dtype: torch.dtype, rel: float) -> None:
    """fn's output and three gradients on make_inputs(**case) within rel of the reference's."""
    inputs = make_inputs(**case, dtype=dtype)
    out, grads = forward_and_grads(fn, inputs)
    ref_out, ref_grads = forward_and_grads(ms_deform_attn_reference, inputs)
    assert out.shape == (case["N"], case["Lq"], case["M"] * case["D"])
    assert_rel_close(out, ref_out, rel)
    for name, grad, ref_grad in zip(("value", "sampling_locations", "attention_weights"), grads, ref_grads):
        assert grad is not None and ref_grad is not None, name
        assert_rel_close(grad, ref_grad, rel)


@pytest.mark.parametrize("N,Lq", [(0, 4), (2, 0)], ids=["N0", "Lq0"])
def test_empty_batch_or_queries_forward_and_backward(N, Lq):
    inputs = make_inputs(N=N, Lq=Lq, M=2, D=3, shapes=[(3, 3), (2, 1)], P=2)
    out = ms_deform_attn(*inputs)
    assert out.shape == (N, Lq, 6)
    out.sum().backward()
    assert inputs[0].grad.shape == inputs[0].shape and inputs[3].grad.shape == inputs[3].shape


def assert_borders_and_outside_match_reference(fn) -> None:
    """fn against the reference at locations on and around the borders of a 4x4 map: x * 4 - 0.5
    is exact in binary, so both see the same pixel coordinates, including the edges -1
    (x = -0.125) and W (x = 1.125) of the sampled region."""
    coords = [-0.3, -0.125, 0.0, 0.25, 0.5, 1.0, 1.125, 1.7]
    xy = torch.tensor([(x, y) for x in coords for y in coords], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    value = torch.randn(1, 16, 1, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    spatial_shapes = torch.tensor([[4, 4]])
    locations = xy.view(1, -1, 1, 1, 1, 2).clone().requires_grad_()
    weights = torch.rand(1, len(xy), 1, 1, 1, generator=generator, dtype=torch.float64, requires_grad=True)
    inputs = (value, spatial_shapes, level_start_index(spatial_shapes), locations, weights)
    out, grads = forward_and_grads(fn, inputs)
    ref_out, ref_grads = forward_and_grads(ms_deform_attn_reference, inputs)
    assert_rel_close(out, ref_out, 1e-12)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_rel_close(grad, ref_grad, 1e-12)
    outside = ((xy < -0.125) | (xy >= 1.125)).any(-1)
    assert outside.sum() == 64 - 5 * 5
    assert out[0, outside].abs().max() == 0
    assert grads[1][0, outside].abs().max() == 0 and grads[2][0, outside].abs().max() == 0
    inside = (xy >= 0).all(-1) & (xy <= 1).all(-1)
    assert out[0, inside].abs().min() > 0


@requires_compiled_cpu
def test_borders_and_outside_match_reference():
    assert_borders_and_outside_match_reference(compiled_op)


# Spoiled samples of the non-finite test, one per query q (batch 0, head 0, level q % 2,
# point 0): (location x, location y, weight); None keeps the random value.
NAN, INF = float("nan"), float("inf")
NON_FINITE_SAMPLES = [
    (NAN, None, None),  # one NaN coordinate
    (None, INF, None),
    (-INF, -INF, None),
    (NAN, 0.5, 0.0),  # NaN location with a zero weight: still NaN (0 * NaN)
    (None, None, NAN),  # weights: inside the map
    (None, None, INF),
    (None, None, -INF),
    (0.375, 0.5, INF),  # inf weight on a point whose corner weights include 0
    (1.5, 0.5, NAN),  # outside the map: attn * 0 is NaN
    (-0.5, 0.5, INF),
    (1e30, 0.5, None),  # finite, far outside: samples 0, stays finite
]


def non_finite_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """make_inputs with NON_FINITE_SAMPLES written in (N=2, one clean query and head each)."""
    inputs = make_inputs(N=2, Lq=len(NON_FINITE_SAMPLES) + 1, M=2, D=3, shapes=[(3, 4), (2, 2)], P=2, dtype=dtype)
    value, spatial_shapes, starts, locations, weights = (t.detach() for t in inputs)
    for q, (x, y, weight) in enumerate(NON_FINITE_SAMPLES):
        for index, spoiled in ((0, x), (1, y)):
            if spoiled is not None:
                locations[0, q, 0, q % 2, 0, index] = spoiled
        if weight is not None:
            weights[0, q, 0, q % 2, 0] = weight
    return tuple(
        t.requires_grad_() if t.is_floating_point() else t for t in (value, spatial_shapes, starts, locations, weights)
    )


def assert_same_non_finite(actual: torch.Tensor, expected: torch.Tensor, rel: float, name: str) -> None:
    """NaN, +inf and -inf at the same entries; finite entries within rel of max |finite|."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    for what, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        mismatch = (test(actual) != test(expected)).nonzero().tolist()
        assert not mismatch, f"{name}: {what} differs at {mismatch[:5]}"
    finite = torch.isfinite(expected)
    assert_rel_close(actual[finite], expected[finite], rel)


def assert_non_finite_rule(fn, dtype: torch.dtype, device: str = "cpu", rel: float = 1e-5) -> None:
    """fn on ``device`` follows the reference (on CPU) on NON_FINITE_SAMPLES: the output and
    grad value / grad weights have NaN and +-inf exactly where the reference's do; a location
    gradient is non-finite exactly where one of the reference's two is (grid_sample leaves the
    finite coordinate of a half-NaN location at 0, the kernels give NaN to both)."""
    inputs = non_finite_inputs(dtype)
    grad_output = torch.randn(
        inputs[3].shape[0], inputs[3].shape[1], 2 * 3, generator=torch.Generator().manual_seed(1)
    ).to(dtype)
    on_device = tuple(t.detach().to(device).requires_grad_(t.is_floating_point()) for t in inputs)
    out, grads = forward_and_grads(fn, on_device, grad_output.to(device))
    out, grads = out.cpu(), [g.cpu() for g in grads]
    ref_out, ref_grads = forward_and_grads(ms_deform_attn_reference, inputs, grad_output)
    # The test's premise: every spoiled query but the last (1e30) has a non-finite output.
    assert (~torch.isfinite(ref_out[0, :-2, :3])).any(-1).all() and torch.isfinite(ref_out[0, -2:]).all()
    assert_same_non_finite(out, ref_out, rel, "output")
    assert_same_non_finite(grads[0], ref_grads[0], rel, "grad value")
    assert_same_non_finite(grads[2], ref_grads[2], rel, "grad attention_weights")
    non_finite = ~torch.isfinite(grads[1]).all(-1)
    ref_non_finite = ~torch.isfinite(ref_grads[1]).all(-1)
    assert torch.equal(non_finite, ref_non_finite), (non_finite ^ ref_non_finite).nonzero().tolist()
    finite = ~ref_non_finite
    assert_rel_close(grads[1][finite], ref_grads[1][finite], rel)


@requires_compiled_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_compiled_propagates_non_finite_like_reference(dtype):
    assert_non_finite_rule(compiled_op, dtype)


@requires_compiled_cpu
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(dict(N=2, Lq=3, M=2, D=3, shapes=[(3, 4), (2, 2)], P=2), id="L2"),
        pytest.param(dict(N=1, Lq=2, M=1, D=5, shapes=[(5, 3)], P=1), id="L1P1"),
    ],
)
def test_gradcheck(case, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "compiled")
    inputs = make_inputs(**case, dtype=torch.float64, margin=0.2)
    assert torch.autograd.gradcheck(ms_deform_attn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@requires_compiled_cpu
@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "no_grad"])
def test_opcheck(requires_grad):
    inputs = make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2)
    inputs = tuple(t.detach().requires_grad_(requires_grad and t.is_floating_point()) for t in inputs)
    torch.library.opcheck(torch.ops.depotr.ms_deform_attn_forward.default, inputs)
    grad_output = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.depotr.ms_deform_attn_backward.default,
        tuple(t.detach() for t in inputs) + (grad_output,),
        test_utils=("test_schema", "test_faketensor"),
    )


BAD_INPUTS = [
    # (argument, how to spoil it, error, match): every message names the argument.
    pytest.param("value", lambda t: t[0], ValueError, "value must be 4-D", id="value_rank"),
    pytest.param("value", lambda t: t.long(), ValueError, "value must have a floating", id="value_int"),
    pytest.param(
        "spatial_shapes",
        lambda t: t.int(),
        ValueError,
        "spatial_shapes must be int64",
        id="shapes_int32",
    ),
    pytest.param(
        "spatial_shapes",
        lambda t: t.repeat(1, 2),
        ValueError,
        r"spatial_shapes must be \(L, 2\)",
        id="shapes_4_columns",
    ),
    pytest.param(
        "spatial_shapes",
        lambda t: torch.tensor([[0, 20], [2, 2]]),
        ValueError,
        "spatial_shapes must hold positive",
        id="shapes_zero",
    ),
    pytest.param(
        "spatial_shapes",
        lambda t: torch.tensor([[4, 4], [2, 2]]),
        ValueError,
        r"spatial_shapes .* but value has S = 24",
        id="shapes_sum_not_S",
    ),
    pytest.param("level_start_index", lambda t: t[:1], ValueError, "level_start_index must be", id="starts_L"),
    pytest.param(
        "level_start_index",
        lambda t: torch.tensor([0, 4]),
        ValueError,
        "level_start_index must be the exclusive cumsum",
        id="starts_not_cumsum",
    ),
    pytest.param(
        "level_start_index",
        lambda t: t.float(),
        ValueError,
        "level_start_index must be int64",
        id="starts_float",
    ),
    pytest.param(
        "sampling_locations",
        lambda t: t[0],
        ValueError,
        "sampling_locations must be 6-D",
        id="locations_rank",
    ),
    pytest.param(
        "sampling_locations",
        lambda t: t[:, :, :, :1],
        ValueError,
        "sampling_locations must be .* L=2",
        id="locations_L",
    ),
    pytest.param(
        "sampling_locations",
        lambda t: t.double(),
        ValueError,
        "sampling_locations must have value's dtype",
        id="locations_float64",
    ),
    pytest.param(
        "attention_weights",
        lambda t: t[..., :1],
        ValueError,
        "attention_weights must be",
        id="weights_P",
    ),
    pytest.param(
        "attention_weights",
        lambda t: t.half(),
        ValueError,
        "attention_weights must have value's dtype",
        id="weights_float16",
    ),
    pytest.param(
        "attention_weights",
        lambda t: torch.empty(t.shape, device="meta"),
        ValueError,
        "attention_weights is on meta, expected value's device cpu",
        id="weights_other_device",
    ),
    pytest.param(
        "level_start_index",
        lambda t: t.tolist(),
        TypeError,
        "level_start_index must be a torch.Tensor",
        id="starts_list",
    ),
]


@pytest.mark.parametrize("name,spoil,error,match", BAD_INPUTS)
def test_bad_inputs_raise_before_any_kernel(name, spoil, error, match):
    inputs = make_inputs(N=1, Lq=2, M=2, D=3, shapes=[(4, 5), (2, 2)], P=2, dtype=torch.float32)
    args = dict(
        zip(
            (
                "value",
                "spatial_shapes",
                "level_start_index",
                "sampling_locations",
                "attention_weights",
            ),
            inputs,
        )
    )
    args[name] = spoil(args[name])
    with pytest.raises(error, match=match):
        ms_deform_attn(**args)


def _msda_module_inputs(reference_dim: int):
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[6, 4], [3, 2]])
    N, Lq, C, S = 2, 5, 32, 30
    query = torch.randn(N, Lq, C, generator=generator)
    reference_points = torch.rand(N, Lq, 2, reference_dim, generator=generator)
    if reference_dim == 4:
        reference_points[..., 2:] *= 0.5
    input_flatten = torch.randn(N, S, C, generator=generator, requires_grad=True)
    padding_mask = torch.zeros(N, S, dtype=torch.bool)
    padding_mask[1, 20:24] = True
    return (
        query,
        reference_points,
        input_flatten,
        spatial_shapes,
        level_start_index(spatial_shapes),
        padding_mask,
    )


@pytest.mark.parametrize("reference_dim", [2, 4], ids=["points", "boxes"])
def test_msdeformattn_backends_agree(reference_dim, monkeypatch):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    # Non-zero offsets and weights so that the test exercises more than the initial grid.
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(std=0.1)
        module.attention_weights.weight.normal_(std=0.1)
    inputs = _msda_module_inputs(reference_dim)
    results = {}
    for backend in ("reference", "compiled") if msda_backend("cpu") == "compiled" else ("reference",):
        monkeypatch.setenv(BACKEND_ENV_VAR, backend)
        module.zero_grad()
        inputs[2].grad = None
        out = module(*inputs)
        assert out.shape == (2, 5, 32)
        out.square().sum().backward()
        results[backend] = (
            out.detach(),
            inputs[2].grad.clone(),
            module.sampling_offsets.weight.grad.clone(),
        )
    for ref, comp in zip(results["reference"], results.get("compiled", results["reference"])):
        assert_rel_close(comp, ref, 1e-5)


@pytest.mark.parametrize(
    "value_dtype, other_dtype, expected",
    [
        (torch.float16, torch.float32, torch.float16),
        (torch.bfloat16, torch.float32, torch.float32),
        (torch.float32, torch.float64, torch.float64),
    ],
    ids=["fp16_value", "bf16_value", "fp32_fp64"],
)
def test_mixed_precision_inputs_get_one_dtype(value_dtype, other_dtype, expected):
    value = torch.rand(1, 4, 2, 3).to(value_dtype)
    locations = torch.rand(1, 2, 2, 1, 1, 2, dtype=other_dtype)
    weights = torch.rand(1, 2, 2, 1, 1, dtype=other_dtype)
    cast = mixed_precision_msda_inputs(value, locations, weights)
    assert [t.dtype for t in cast] == [expected] * 3
    torch.testing.assert_close(cast[1].double(), locations.double(), atol=1e-3, rtol=0)
    same = mixed_precision_msda_inputs(value, locations.to(value_dtype), weights.to(value_dtype))
    assert same[0] is value


def test_msdeformattn_under_cpu_autocast_matches_float32():
    # torch.autocast gives a bfloat16 value (value_proj) and float32 locations / weights; the
    # layer runs the op in float32 and stays close to the float32 result (bf16 linear layers).
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(std=0.1)
        module.attention_weights.weight.normal_(std=0.1)
    inputs = _msda_module_inputs(2)
    expected = module(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(*inputs)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - expected).abs().max() <= 0.05 * expected.abs().max()
    out.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_msdeformattn_under_bfloat16_autocast_samples_at_float32_locations(monkeypatch):
    # Even when query and reference points arrive in bfloat16 (a bfloat16 body), the locations and
    # the softmax are formed in float32 and the op runs in float32 (the compiled kernel's dtype).
    layer_module = importlib.import_module("depotr.layers.ms_deform_attn")
    seen = []

    def spy(value, shapes, starts, locations, weights):
        seen.append((value.dtype, locations.dtype, weights.dtype))
        return ms_deform_attn(value, shapes, starts, locations, weights)

    monkeypatch.setattr(layer_module, "ms_deform_attn", spy)
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    query, reference, *rest = _msda_module_inputs(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(query.bfloat16(), reference.bfloat16(), *rest)
    assert seen == [(torch.float32,) * 3]


def test_msdeformattn_initialisation_and_errors():
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=8, n_points=3)
    bias = module.sampling_offsets.bias.view(8, 2, 3, 2)
    # head 0 samples along +x, head 1 along (1, 1) (normalised by the larger coordinate), point p
    # at p + 1 pixels, the same on every level.
    torch.testing.assert_close(bias[0, 1], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(bias[1, 0], torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    assert module.sampling_offsets.weight.abs().max() == 0 and module.attention_weights.weight.abs().max() == 0
    assert module.value_proj.bias.abs().max() == 0 and module.output_proj.bias.abs().max() == 0
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads"):
        MSDeformAttn(d_model=30, n_heads=8)
    query, reference_points, input_flatten, spatial_shapes, starts, _ = _msda_module_inputs(2)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    with pytest.raises(ValueError, match="Last dim of reference_points must be 2 or 4"):
        module(query, reference_points[..., :1], input_flatten, spatial_shapes, starts)
    # One level short (a (N, Lq, 1, 2) or (N, Lq, 1, 4) reference broadcast nothing or everything).
    for last in (2, 4):
        with pytest.raises(ValueError, match=r"reference_points must be \(N, Lq, n_levels, 2 or 4\) = \(2, 5, 2, "):
            module(query, torch.rand(2, 5, 1, last), input_flatten, spatial_shapes, starts)
    with pytest.raises(
        ValueError, match=r"input_spatial_shapes must be \(n_levels, 2\) = \(2, 2\), got shape \(3, 2\)"
    ):
        module(query, reference_points, input_flatten, torch.cat((spatial_shapes, spatial_shapes[:1])), starts)


@requires_compiled_cpu
def test_torch_compile_fullgraph_and_export():
    def attend(value, spatial_shapes, starts, locations, weights):
        return ms_deform_attn(value, spatial_shapes, starts, locations.sigmoid(), weights.softmax(-1)) * 2

    inputs = make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2, dtype=torch.float32)
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    out, grads = forward_and_grads(compiled, inputs)
    ref_out, ref_grads = forward_and_grads(attend, inputs)
    assert_rel_close(out, ref_out, 1e-6)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_rel_close(grad, ref_grad, 1e-6)

    class Attend(torch.nn.Module):
        def forward(self, *args):
            return attend(*args)

    exported = torch.export.export(Attend(), tuple(t.detach() for t in inputs))
    assert "depotr.ms_deform_attn_forward" in str(exported.graph)
    assert_rel_close(exported.module()(*inputs), ref_out, 1e-6)


def test_layers_import_torch_only():
    # Import depotr.layers without running depotr/__init__.py (which may pull in Detectron2).
    package_dir = os.path.dirname(os.path.dirname(msda_op.__file__))
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('depotr'); package.__path__ = [{package_dir!r}]\n"
        "sys.modules['depotr'] = package\n"
        "import depotr.layers\n"
        "assert not [m for m in sys.modules if m.startswith('detectron2')], 'detectron2 was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
