"""AdamW (or SGD) with DePOTR's parameter groups (Deformable DETR's recipe): the backbone at
``BASE_LR x BACKBONE_MULTIPLIER``, ``sampling_offsets`` / ``reference_points`` at
``BASE_LR x SAMPLING_LR_MULTIPLIER``; weight decay ``WEIGHT_DECAY_NORM`` for norms,
``WEIGHT_DECAY_EMBED`` for embeddings, else ``WEIGHT_DECAY``; parameters named "bias" then take
Detectron2's ``WEIGHT_DECAY_BIAS`` (when not None) and their lr x ``BIAS_LR_FACTOR`` (defaults: no
change); frozen parameters left out.
``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"`` clips the norm of all gradients together
(Deformable DETR: 0.1); "value" / "norm" are Detectron2's per-parameter clippers.
"""

from typing import Any, Dict, List, Type

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import Backbone
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

from ..cli import ConfigError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_SAMPLING_MODULE_NAMES = ("sampling_offsets", "reference_points")
_OPTIMIZERS = ("ADAMW", "SGD")
_CLIP_TYPES = ("full_model", "value", "norm")  # ours, then Detectron2's GradientClipType


def check_optimizer_config(cfg: CfgNode) -> None:
    """A ConfigError naming the key unless :func:`build_optimizer` can build ``cfg``'s optimizer:
    a known ``SOLVER.OPTIMIZER``, ``BASE_LR`` > 0, lr multipliers >= 0, two ``BETAS`` in [0, 1)
    and, when ``CLIP_GRADIENTS.ENABLED``, a known ``CLIP_TYPE`` with ``CLIP_VALUE`` and
    ``NORM_TYPE`` > 0 (these ended in tracebacks in the first step or silently trained wrong)."""
    solver = cfg.SOLVER
    if solver.OPTIMIZER.upper() not in _OPTIMIZERS:
        raise ConfigError(f"SOLVER.OPTIMIZER must be one of {_OPTIMIZERS}, got {solver.OPTIMIZER!r}")
    if not solver.BASE_LR > 0:
        raise ConfigError(f"SOLVER.BASE_LR must be > 0, got {solver.BASE_LR}")
    for key in ("BACKBONE_MULTIPLIER", "SAMPLING_LR_MULTIPLIER", "BIAS_LR_FACTOR"):
        if not solver[key] >= 0:
            raise ConfigError(f"SOLVER.{key} must be >= 0 (a factor of SOLVER.BASE_LR), got {solver[key]}")
    if solver.OPTIMIZER.upper() == "ADAMW" and not (len(solver.BETAS) == 2 and all(0 <= b < 1 for b in solver.BETAS)):
        raise ConfigError(f"SOLVER.BETAS must be two numbers in [0, 1), got {tuple(solver.BETAS)}")
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED:
        if clip.CLIP_TYPE not in _CLIP_TYPES:
            raise ConfigError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {_CLIP_TYPES}, got {clip.CLIP_TYPE!r}")
        for key in ("CLIP_VALUE", "NORM_TYPE"):
            if not clip[key] > 0:
                raise ConfigError(f"SOLVER.CLIP_GRADIENTS.{key} must be > 0, got {clip[key]}")


def build_param_groups(cfg: CfgNode, model: nn.Module) -> List[Dict[str, Any]]:
    """The optimizer param groups; parameters with equal lr and weight decay share one group
    (``reduce_param_groups``), so that AdamW updates each with one multi-tensor (foreach) kernel."""
    # Not get_default_optimizer_params: its overrides key on a parameter's own name ("weight", "bias").
    base_lr = cfg.SOLVER.BASE_LR
    backbone_params = {id(p) for m in model.modules() if isinstance(m, Backbone) for p in m.parameters()}
    groups: List[Dict[str, Any]] = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr
            if id(param) in backbone_params:
                lr = base_lr * cfg.SOLVER.BACKBONE_MULTIPLIER
            elif module_name.split(".")[-1] in _SAMPLING_MODULE_NAMES:
                lr = base_lr * cfg.SOLVER.SAMPLING_LR_MULTIPLIER
            weight_decay = cfg.SOLVER.WEIGHT_DECAY
            if isinstance(module, _NORM_TYPES):
                weight_decay = cfg.SOLVER.WEIGHT_DECAY_NORM
            elif isinstance(module, nn.Embedding) or "embed" in param_name:
                weight_decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
            if param_name == "bias":  # Detectron2's bias keys, on the parameter's name as its optimizer
                lr *= cfg.SOLVER.BIAS_LR_FACTOR
                if cfg.SOLVER.WEIGHT_DECAY_BIAS is not None:
                    weight_decay = cfg.SOLVER.WEIGHT_DECAY_BIAS
            groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay})
    return reduce_param_groups(groups)


def add_gradient_clipping(cfg: CfgNode, optimizer_type: Type[torch.optim.Optimizer]) -> Type[torch.optim.Optimizer]:
    """Returns ``optimizer_type`` with the gradient clipping of ``SOLVER.CLIP_GRADIENTS``."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        return maybe_add_gradient_clipping(cfg, optimizer_type)
    max_norm, norm_type = clip.CLIP_VALUE, clip.NORM_TYPE

    def step_with_full_model_clipping(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return optimizer_type.step(self, closure)

    return type(
        optimizer_type.__name__ + "WithFullModelGradientClip",
        (optimizer_type,),
        {"step": step_with_full_model_clipping},
    )


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """Builds ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD") over :func:`build_param_groups`, with
    gradient clipping (``SOLVER.CLIP_GRADIENTS``) when enabled."""
    groups = build_param_groups(cfg, model)
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        return add_gradient_clipping(cfg, torch.optim.AdamW)(
            groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS)
        )
    if name == "SGD":
        return add_gradient_clipping(cfg, torch.optim.SGD)(
            groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
        )
    raise ConfigError(f"SOLVER.OPTIMIZER must be one of {_OPTIMIZERS}, got {cfg.SOLVER.OPTIMIZER!r}")
