"""Backend choice of multi-scale deformable attention, on CPU: the real table (compiled C++
kernel, Triton, reference) and the CUDA fallback logic run with fake backends on CPU (self-check,
fallback order, one warning, forcing, caching)."""

import importlib
import logging

import pytest
import torch

from depotr.layers import BACKEND_ENV_VAR, ms_deform_attn, ms_deform_attn_reference, msda_backend

from .test_ms_deform_attn import make_inputs, requires_compiled_cpu

msda_op = importlib.import_module("depotr.layers.ms_deform_attn_op")

NO_KERNEL_IMAGE = "CUDA error: no kernel image is available for execution on the device"


@pytest.fixture(autouse=True)
def fresh_backend_choices(monkeypatch):
    monkeypatch.setattr(msda_op, "_CHOICES", {})
    monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)


@pytest.fixture
def warnings_logged():
    """The messages that depotr.layers.ms_deform_attn_op logs at WARNING during the test."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    msda_op.logger.addHandler(handler)
    yield messages
    msda_op.logger.removeHandler(handler)


# ---------------------------------------------------------------------------------------------
# The real table on CPU


def test_backend_default_and_forced(monkeypatch):
    assert msda_backend("cpu", torch.float16) == "reference"  # the C++ kernel is fp32/fp64 only
    assert msda_backend("meta") == "reference"
    monkeypatch.setenv(BACKEND_ENV_VAR, "reference")
    assert msda_backend("cpu") == "reference"
    monkeypatch.setenv(BACKEND_ENV_VAR, "compiled")
    with pytest.raises(RuntimeError, match=f"{BACKEND_ENV_VAR}=compiled, but .*'meta'"):
        msda_backend("meta")
    with pytest.raises(RuntimeError, match=f"{BACKEND_ENV_VAR}=compiled, but .*not torch.float16"):
        msda_backend("cpu", torch.float16)
    monkeypatch.setenv(BACKEND_ENV_VAR, "fast")
    with pytest.raises(ValueError, match=f"{BACKEND_ENV_VAR} must be one of .*'triton'"):
        msda_backend("cpu")


def test_triton_is_never_chosen_on_cpu_and_forcing_it_explains(monkeypatch):
    # Without TRITON_INTERPRET=1 at import, the kernels need CUDA.
    monkeypatch.setattr(msda_op, "_TRITON_KERNELS", (type("Kernels", (), {"INTERPRETED": False}), None))
    assert msda_backend("cpu", torch.float16) == "reference"
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="run on CUDA devices, not 'cpu'.*TRITON_INTERPRET=1"):
        msda_backend("cpu")
    monkeypatch.setattr(msda_op, "_TRITON_KERNELS", (None, "Triton could not be imported (test)"))
    with pytest.raises(RuntimeError, match=r"Triton could not be imported \(test\)"):
        msda_backend("cpu")


def test_backend_without_compiled_ops(monkeypatch):
    monkeypatch.setattr(msda_op, "_COMPILED_OPS_ERROR", "depotr._C could not be imported (test)")
    assert msda_backend("cpu") == "reference"
    monkeypatch.setenv(BACKEND_ENV_VAR, "compiled")
    with pytest.raises(RuntimeError, match=r"could not be imported \(test\)"):
        msda_backend("cpu")


@requires_compiled_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_real_compiled_kernel_passes_the_self_check(dtype, monkeypatch, warnings_logged):
    # The check that guards CUDA, run on the C++ CPU kernel: no false alarm at its tolerance.
    monkeypatch.setattr(msda_op, "_SELF_CHECKED_DEVICE_TYPES", ("cpu",))
    assert msda_op._self_check(msda_op.BACKENDS["compiled"], torch.device("cpu"), dtype) is None
    assert msda_backend("cpu", dtype) == "compiled" and not warnings_logged


# ---------------------------------------------------------------------------------------------
# The CUDA logic with fake backends on CPU


class WrongGradient(torch.autograd.Function):
    """The reference's output, with a gradient of sampling_locations twice too large."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, locations, weights):
        ctx.save_for_backward(value, spatial_shapes, level_start_index, locations, weights)
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, locations, weights)

    @staticmethod
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (value, locations, weights)]
            out = ms_deform_attn_reference(inputs[0], spatial_shapes, level_start_index, *inputs[1:])
            grads = torch.autograd.grad(out, inputs, grad_output)
        return grads[0], None, None, 2 * grads[1], grads[2]


def raises_no_kernel_image(*inputs):
    raise RuntimeError(NO_KERNEL_IMAGE)


FAULTS = {
    "raises": (raises_no_kernel_image, "RuntimeError: " + NO_KERNEL_IMAGE),
    "wrong_output": (
        lambda *inputs: 1.01 * ms_deform_attn_reference(*inputs),
        "output differs from the reference by 1.0e-02 (tolerance 1e-04)",
    ),
    "wrong_gradient": (WrongGradient.apply, "grad sampling_locations differs from the reference"),
    "nan_output": (
        lambda *inputs: ms_deform_attn_reference(*inputs) * float("nan"),
        "output differs from the reference by nan",
    ),
    "wrong_dtype": (
        lambda *inputs: ms_deform_attn_reference(*inputs).double(),
        "output is (3, 5, 64) torch.float64, expected (3, 5, 64) torch.float32",
    ),
}


def counting(forward, calls: list, name: str):
    def run(*inputs):
        calls.append(name)
        return forward(*inputs)

    return run


@pytest.fixture
def fake_table(monkeypatch):
    """Installs a backend table {compiled, triton, reference} of reference-backed fakes, with the
    CUDA policy (self-check, fallback order) on CPU. Returns (install(name, forward=None,
    unavailable=None), calls): install replaces one fake; calls lists the forward calls."""
    calls = []
    table = {
        name: msda_op.MSDABackend(counting(ms_deform_attn_reference, calls, name), lambda *a: None)
        for name in ("compiled", "triton", "reference")
    }
    monkeypatch.setattr(msda_op, "BACKENDS", table)
    monkeypatch.setattr(msda_op, "_FALLBACK_ORDER", {"cpu": ("compiled", "triton", "reference")})
    monkeypatch.setattr(msda_op, "_SELF_CHECKED_DEVICE_TYPES", ("cpu",))

    def install(name, forward=ms_deform_attn_reference, unavailable=lambda *a: None):
        table[name] = msda_op.MSDABackend(counting(forward, calls, name), unavailable)

    return install, calls


def test_first_backend_passing_its_self_check_is_used_silently(fake_table, warnings_logged):
    _, calls = fake_table
    assert msda_backend("cpu") == "compiled"
    assert calls == ["compiled"] and not warnings_logged


@pytest.mark.parametrize("fault", FAULTS)
def test_failing_backend_falls_back_with_one_warning(fault, fake_table, warnings_logged):
    install, calls = fake_table
    forward, error = FAULTS[fault]
    install("compiled", forward)
    inputs = make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2, dtype=torch.float32)
    out = ms_deform_attn(*inputs)
    torch.testing.assert_close(out, ms_deform_attn_reference(*inputs))
    ms_deform_attn(*inputs)
    assert msda_backend("cpu") == "triton"
    # self-checks: compiled (fails), triton (passes); then the two calls run triton
    assert calls == ["compiled", "triton", "triton", "triton"]
    assert len(warnings_logged) == 1, warnings_logged
    (message,) = warnings_logged
    assert message.startswith("ms_deform_attn on cpu, torch.float32: backend 'compiled' failed its self-check: ")
    assert error in message and message.endswith("using the 'triton' backend")


def test_unavailable_and_failing_backends_fall_back_to_reference(fake_table, warnings_logged):
    install, calls = fake_table
    install("compiled", unavailable=lambda device_type, dtype: "depotr._C was built without CUDA kernels")
    install("triton", raises_no_kernel_image)
    assert msda_backend("cpu", torch.float64) == "reference"
    assert calls == ["triton"]  # unavailable: never run; the reference is not self-checked
    (message,) = warnings_logged
    assert "cpu, torch.float64: backend 'compiled' is unavailable: depotr._C was built without CUDA" in message
    assert f"backend 'triton' failed its self-check: RuntimeError: {NO_KERNEL_IMAGE}" in message
    assert message.endswith("using the 'reference' backend")


def test_choice_is_made_once_per_device_and_dtype(fake_table, warnings_logged):
    install, calls = fake_table
    install("compiled", raises_no_kernel_image)
    for _ in range(3):
        assert msda_backend("cpu", torch.float32) == "triton"
    assert calls == ["compiled", "triton"] and len(warnings_logged) == 1
    assert msda_backend("cpu", torch.float64) == "triton"  # another dtype: checked again
    assert calls == ["compiled", "triton"] * 2 and len(warnings_logged) == 2
    assert "torch.float64" in warnings_logged[1]


@pytest.mark.parametrize("fault", ["raises", "wrong_gradient"])
def test_forced_backend_that_fails_raises_instead_of_falling_back(fault, fake_table, monkeypatch, warnings_logged):
    install, calls = fake_table
    forward, error = FAULTS[fault]
    install("compiled", forward)
    monkeypatch.setenv(BACKEND_ENV_VAR, "compiled")
    inputs = make_inputs(N=1, Lq=2, M=1, D=2, shapes=[(2, 2)], P=1, dtype=torch.float32)
    with pytest.raises(
        RuntimeError, match=f"{BACKEND_ENV_VAR}=compiled, but on cpu, torch.float32: failed its self-check: "
    ) as raised:
        ms_deform_attn(*inputs)
    assert error in str(raised.value)
    assert calls == ["compiled"] and not warnings_logged  # nothing else tried
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    assert msda_backend("cpu") == "triton"


def test_forced_backend_that_is_unavailable_raises(fake_table, monkeypatch):
    install, _ = fake_table
    install("triton", unavailable=lambda device_type, dtype: "Triton could not be imported (test)")
    monkeypatch.setenv(BACKEND_ENV_VAR, "triton")
    with pytest.raises(
        RuntimeError, match=r"=triton, but on cpu, torch.float32: Triton could not be imported \(test\)"
    ):
        msda_backend("cpu")


def test_self_check_runs_under_no_grad_and_inference_mode_and_keeps_the_rng(fake_table, warnings_logged):
    _, calls = fake_table
    state = torch.get_rng_state()
    with torch.inference_mode():
        assert msda_backend("cpu", torch.float32) == "compiled"
    with torch.no_grad():
        assert msda_backend("cpu", torch.float64) == "compiled"
    assert torch.equal(torch.get_rng_state(), state)
    assert calls == ["compiled", "compiled"] and not warnings_logged


def test_self_check_runs_while_torch_export_traces(fake_table, warnings_logged):
    # The first call comes from inside torch.export's tracing (fake tensors): the self-check
    # must still run on real tensors and pass.
    _, calls = fake_table

    class Attend(torch.nn.Module):
        def forward(self, *inputs):
            return ms_deform_attn(*inputs)

    inputs = make_inputs(N=2, Lq=3, M=2, D=4, shapes=[(3, 4), (2, 2)], P=2, dtype=torch.float32)
    inputs = tuple(t.detach() for t in inputs)
    exported = torch.export.export(Attend(), inputs)
    assert msda_backend("cpu") == "compiled" and not warnings_logged
    assert calls[0] == "compiled"
    torch.testing.assert_close(exported.module()(*inputs), ms_deform_attn_reference(*inputs))


@requires_compiled_cpu
@pytest.mark.parametrize(
    "forced,expected",
    [(None, "compiled"), ("reference", "reference"), ("compiled", "compiled")],
    ids=["default", "reference", "compiled"],
)
def test_ms_deform_attn_dispatches_to_chosen_backend(forced, expected, monkeypatch):
    if forced is not None:
        monkeypatch.setenv(BACKEND_ENV_VAR, forced)
    calls = []
    table = {
        name: msda_op.MSDABackend(counting(backend.forward, calls, name), backend.unavailable)
        for name, backend in msda_op.BACKENDS.items()
    }
    monkeypatch.setattr(msda_op, "BACKENDS", table)
    inputs = make_inputs(N=1, Lq=2, M=1, D=2, shapes=[(2, 2)], P=1, dtype=torch.float32)
    ms_deform_attn(*inputs)
    assert msda_backend("cpu") == expected and calls == [expected]


def test_no_backend_serving_raises_naming_each(fake_table):
    install, _ = fake_table
    for name in ("compiled", "triton", "reference"):
        install(name, unavailable=lambda device_type, dtype, name=name: f"no {name} here")
    with pytest.raises(
        RuntimeError,
        match=(
            "no backend serves cpu, torch.float32: backend 'compiled' is unavailable: no compiled here; "
            ".*'reference' is unavailable: no reference here"
        ),
    ):
        msda_backend("cpu")
