"""Parameter groups and gradient clipping of DePOTR's optimizer."""

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from depotr.config import add_depotr_config
from depotr.solver import build_optimizer


class _TinyBackbone(Backbone):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        return {"res5": self.norm(self.conv(x))}

    def output_shape(self):
        return {"res5": ShapeSpec(channels=4, stride=1)}


class _TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _TinyBackbone()
        self.sampling_offsets = nn.Linear(4, 2)
        self.level_embed = nn.Parameter(torch.zeros(4))
        self.query_embed = nn.Embedding(3, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 2).requires_grad_(False)


def _cfg():
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    return cfg


def _group_of(optimizer, param):
    (group,) = [g for g in optimizer.param_groups if any(p is param for p in g["params"])]
    return group


@pytest.mark.parametrize(
    "path, lr, weight_decay",
    [
        ("backbone.conv.weight", 1e-5, 1e-4),
        ("backbone.norm.weight", 1e-5, 0.0),
        ("sampling_offsets.weight", 1e-5, 1e-4),
        ("level_embed", 1e-4, 0.0),
        ("query_embed.weight", 1e-4, 0.0),
        ("norm.weight", 1e-4, 0.0),
        ("head.weight", 1e-4, 1e-4),
        ("head.bias", 1e-4, 1e-4),
    ],
)
def test_param_groups(path, lr, weight_decay):
    model = _TinyModel()
    optimizer = build_optimizer(_cfg(), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = _group_of(optimizer, model.get_parameter(path))
    assert group["lr"] == pytest.approx(lr)
    assert group["weight_decay"] == pytest.approx(weight_decay)


def test_detectron2s_bias_keys_apply_to_biases():
    """The friction: SOLVER.WEIGHT_DECAY_BIAS and BIAS_LR_FACTOR, Detectron2's keys, were ignored."""
    cfg = _cfg()
    cfg.SOLVER.WEIGHT_DECAY_BIAS, cfg.SOLVER.BIAS_LR_FACTOR = 0.0, 2.0
    model = _TinyModel()
    optimizer = build_optimizer(cfg, model)
    for path, lr, weight_decay in [
        ("head.bias", 2e-4, 0.0),
        ("backbone.conv.bias", 2e-5, 0.0),
        ("norm.bias", 2e-4, 0.0),
        ("head.weight", 1e-4, 1e-4),
        ("backbone.conv.weight", 1e-5, 1e-4),
    ]:
        group = _group_of(optimizer, model.get_parameter(path))
        assert (group["lr"], group["weight_decay"]) == (pytest.approx(lr), weight_decay), path


def test_frozen_parameters_are_left_out():
    model = _TinyModel()
    optimizer = build_optimizer(_cfg(), model)
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.frozen.weight) not in params
    assert len(params) == sum(1 for p in model.parameters() if p.requires_grad)


def test_full_model_gradient_clipping_clips_the_total_norm():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    model = nn.Module()
    model.a, model.b = a, b
    optimizer = build_optimizer(cfg, model)
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    optimizer.step()
    total = torch.cat([a.grad, b.grad]).norm()
    assert total.item() == pytest.approx(0.1, rel=1e-4)
    # The ratio between parameters is kept (one global scale, not per-parameter clipping).
    assert (b.grad[0] / a.grad[0]).item() == pytest.approx(4.0 / 3.0)


def test_unknown_optimizer_raises():
    cfg = _cfg()
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, _TinyModel())


def test_parameters_with_equal_settings_share_a_group_and_step_as_before():
    model = _TinyModel()
    optimizer = build_optimizer(_cfg(), model)
    settings = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
    assert len(settings) == len(set(settings))  # one group per distinct (lr, weight decay)
    # Same update as AdamW with one group per parameter (the reference).
    reference_model = _TinyModel()
    reference_model.load_state_dict(model.state_dict())
    per_param = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = next(n for n, q in model.named_parameters() if q is p)
            per_param.append(
                {
                    "params": [reference_model.get_parameter(name)],
                    "lr": group["lr"],
                    "weight_decay": group["weight_decay"],
                }
            )
    reference = torch.optim.AdamW(per_param, lr=1e-4, foreach=False)
    torch.manual_seed(0)
    for _ in range(3):
        for m, opt in ((model, optimizer), (reference_model, reference)):
            opt.zero_grad()
            for p in m.parameters():
                if p.requires_grad:
                    p.grad = torch.ones_like(p) * 0.5
            opt.step()
    for (name, p), q in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, msg=name)
