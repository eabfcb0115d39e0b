"""One training step of the real DePOTR branches under autocast, against float32.

The CUDA test is the issue's: float16 autocast with a gradient scaler, as Detectron2's
AMPTrainer runs a step; it is skipped without a GPU. The CPU test runs the same step under
bfloat16 autocast, which exercises the same mixed-dtype path of the MSDA layer on any machine.
"""

from typing import Dict, Optional, Tuple

import pytest
import torch

from .test_meta_arch import SMALL_MODEL, _load, make_input

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _training_step(
    model: torch.nn.Module, inputs: list, device_type: str, dtype: Optional[torch.dtype]
) -> Tuple[Dict[str, float], torch.Tensor]:
    """Losses and the flattened gradient of all trainable parameters after one step; autocast
    with ``dtype`` (None: float32). float16 uses a GradScaler and unscales, as AMPTrainer."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # same box jitter in every run
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model(inputs)
    total = sum(losses.values())
    if dtype == torch.float16:
        scaler = torch.amp.GradScaler(device_type)
        scaler.scale(total).backward()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # unscale_ needs an optimizer
        scaler.unscale_(optimizer)
    else:
        total.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return {k: v.item() for k, v in losses.items()}, torch.cat(grads).float()


def _assert_step_close_to_float32(name: str, device: str, dtype: torch.dtype, min_cosine: float) -> None:
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(_load(name, [*SMALL_MODEL, "MODEL.DEVICE", device])).train()
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("a", 2, g, size=(80, 64)), make_input("b", 3, g, size=(64, 96))]
    losses32, grads32 = _training_step(model, inputs, device, None)
    losses, grads = _training_step(model, inputs, device, dtype)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert torch.isfinite(grads).all()
    for key, value in losses32.items():
        assert abs(losses[key] - value) <= 0.05 * abs(value) + 1e-6, (key, losses[key], value)
    cosine = torch.nn.functional.cosine_similarity(grads, grads32, dim=0).item()
    assert cosine > min_cosine, cosine


@pytest.mark.parametrize("name", ["depotr_r50.yaml", "depotr_hm_r50.yaml"], ids=["regression", "heatmap"])
def test_cpu_bfloat16_autocast_step_close_to_float32(name):
    _assert_step_close_to_float32(name, "cpu", torch.bfloat16, 0.95)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["depotr_r50.yaml", "depotr_hm_r50.yaml"], ids=["regression", "heatmap"])
def test_cuda_amp_step_close_to_float32(name, dtype):
    _assert_step_close_to_float32(name, "cuda", dtype, 0.99)


def test_amp_on_cpu_trains_the_branch_body_in_bfloat16_close_to_float32():
    """SOLVER.AMP.ENABLED on a CPU: the model runs its keypoint branch's body under bfloat16
    autocast itself (Detectron2's AMPTrainer needs CUDA); losses and gradients stay close to a
    float32 step of the same weights, and the heads and losses stay float32."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(_load("depotr_hm_r50.yaml", [*SMALL_MODEL, "SOLVER.AMP.ENABLED", True])).train()
    assert model.train_precision == torch.bfloat16
    body_dtypes, head_dtypes = [], []
    linear = next(m for m in model.keypoint_branch.body.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, a, o: body_dtypes.append(o.dtype))
    model.keypoint_branch.head.register_forward_hook(lambda m, a, o: head_dtypes.append(o.dtype))
    g = torch.Generator().manual_seed(0)
    inputs = [make_input("a", 2, g, size=(80, 64)), make_input("b", 3, g, size=(64, 96))]
    losses, grads = _training_step(model, inputs, "cpu", None)
    assert body_dtypes == [torch.bfloat16] and head_dtypes == [torch.float32]
    model.train_precision = torch.float32
    losses32, grads32 = _training_step(model, inputs, "cpu", None)
    assert body_dtypes[-1] == torch.float32
    for key, value in losses32.items():
        assert abs(losses[key] - value) <= 0.05 * abs(value) + 1e-6, (key, losses[key], value)
    assert torch.nn.functional.cosine_similarity(grads, grads32, dim=0).item() > 0.95
