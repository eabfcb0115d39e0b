"""Learning-rate schedules (warm-up, then linear or cosine decay) and epochs -> iterations."""

import logging
import math
from typing import Sequence

import torch

from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as build_detectron2_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler, LinearParamScheduler

from ..cli import ConfigError
from .optimizer import check_optimizer_config

logger = logging.getLogger(__name__)

# Our schedules; any other LR_SCHEDULER_NAME goes to Detectron2's builder.
_DECAYS = {
    "WarmupLinearLR": lambda final: LinearParamScheduler(1.0, final),
    "WarmupCosineLR": lambda final: CosineParamScheduler(1.0, final),
}
_WARMUP_METHODS = ("linear", "constant")  # Detectron2's WarmupParamScheduler


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler._LRScheduler:
    """Warm-up over ``WARMUP_ITERS`` from ``WARMUP_FACTOR``, then linear or cosine decay to
    ``FINAL_LR_FACTOR`` at ``MAX_ITER``, as a factor of each param group's own lr."""
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name not in _DECAYS:
        return build_detectron2_lr_scheduler(cfg, optimizer)
    decay = _DECAYS[name](cfg.SOLVER.FINAL_LR_FACTOR)
    warmup_fraction = min(cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER, 1.0)
    multiplier = WarmupParamScheduler(decay, cfg.SOLVER.WARMUP_FACTOR, warmup_fraction, cfg.SOLVER.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=multiplier, max_iter=cfg.SOLVER.MAX_ITER)


def check_training_schedule(cfg: CfgNode, world_size: int = 1, overrides: Sequence[str] = ()) -> None:
    """A ConfigError naming the key unless ``cfg`` can train on ``world_size`` processes as its
    command-line ``overrides`` (KEY VALUE ...) ask: no ``MAX_ITER`` / ``WARMUP_ITERS`` override that
    an epoch schedule (``MAX_EPOCHS`` > 0, the COCO configs') would replace;
    ``SOLVER.IMS_PER_BATCH`` a positive multiple of ``world_size``; without an epoch schedule
    (``MAX_EPOCHS`` <= 0), ``MAX_ITER`` >= 1 (0 ended in a ZeroDivisionError); a known schedule and
    warm-up with non-negative lengths and factors; ``CHECKPOINT_PERIOD`` >= 1 (0 ended in a
    ZeroDivisionError at the first step, a negative one saved every iteration); ``TEST.EVAL_PERIOD``
    >= 0; and the optimizer keys (:func:`~depotr.solver.optimizer.check_optimizer_config`)."""
    solver = cfg.SOLVER
    replaced = [key for key in overrides[0::2] if key in ("SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS")]
    if solver.MAX_EPOCHS > 0 and replaced:
        raise ConfigError(
            f"{replaced[0]} is set in the overrides, but SOLVER.MAX_EPOCHS={solver.MAX_EPOCHS} replaces it with the "
            "epochs' count (docs/config.md, Solver); add SOLVER.MAX_EPOCHS 0 to train by iterations"
        )
    if solver.IMS_PER_BATCH < 1 or solver.IMS_PER_BATCH % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH must be a positive multiple of the {world_size} training process(es), "
            f"got {solver.IMS_PER_BATCH}"
        )
    if solver.MAX_EPOCHS <= 0 and solver.MAX_ITER < 1:
        raise ConfigError(f"SOLVER.MAX_ITER must be >= 1 to train (or SOLVER.MAX_EPOCHS > 0), got {solver.MAX_ITER}")
    warmup_length = "WARMUP_EPOCHS" if solver.MAX_EPOCHS > 0 else "WARMUP_ITERS"
    for key, minimum in ((warmup_length, 0), ("FINAL_LR_FACTOR", 0), ("CHECKPOINT_PERIOD", 1)):
        if solver[key] < minimum:
            raise ConfigError(f"SOLVER.{key} must be >= {minimum}, got {solver[key]}")
    if not 0 <= solver.WARMUP_FACTOR <= 1:
        raise ConfigError(f"SOLVER.WARMUP_FACTOR must be in [0, 1] (a factor of the lr), got {solver.WARMUP_FACTOR}")
    if solver.WARMUP_METHOD not in _WARMUP_METHODS:
        raise ConfigError(f"SOLVER.WARMUP_METHOD must be one of {_WARMUP_METHODS}, got {solver.WARMUP_METHOD!r}")
    if cfg.TEST.EVAL_PERIOD < 0:
        raise ConfigError(
            f"TEST.EVAL_PERIOD must be >= 0 (0: evaluate after training only), got {cfg.TEST.EVAL_PERIOD}"
        )
    if solver.LR_SCHEDULER_NAME not in _DECAYS:
        try:  # Detectron2's names differ between versions: ask its builder
            build_detectron2_lr_scheduler(cfg, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
        except ValueError as e:
            raise ConfigError(
                f"SOLVER.LR_SCHEDULER_NAME {solver.LR_SCHEDULER_NAME!r}: {e} (DePOTR's: {', '.join(_DECAYS)}; "
                "else one of Detectron2's, e.g. WarmupMultiStepLR)"
            ) from None
    check_optimizer_config(cfg)


def apply_epoch_schedule(cfg: CfgNode, num_train_images: int) -> None:
    """When ``SOLVER.MAX_EPOCHS > 0``, sets ``MAX_ITER`` and ``WARMUP_ITERS`` (in place, on an
    unfrozen cfg) from epochs, the training set size and ``IMS_PER_BATCH``; logs the result."""
    if cfg.SOLVER.MAX_EPOCHS <= 0:
        return
    if num_train_images <= 0:
        raise ValueError(f"SOLVER.MAX_EPOCHS={cfg.SOLVER.MAX_EPOCHS} needs a non-empty training set")
    iters_per_epoch = math.ceil(num_train_images / cfg.SOLVER.IMS_PER_BATCH)
    cfg.SOLVER.MAX_ITER = int(cfg.SOLVER.MAX_EPOCHS * iters_per_epoch)
    cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_EPOCHS * iters_per_epoch))
    solver = cfg.SOLVER
    logger.info(
        f"Epoch schedule: {num_train_images} images / {solver.IMS_PER_BATCH} per batch = {iters_per_epoch} "
        f"iterations per epoch; {solver.MAX_EPOCHS} epochs -> MAX_ITER={solver.MAX_ITER}, "
        f"{solver.WARMUP_EPOCHS} warm-up epochs -> WARMUP_ITERS={solver.WARMUP_ITERS}"
    )
