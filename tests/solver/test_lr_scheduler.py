"""Learning-rate schedules at chosen iterations, against values computed by hand."""

import math

import pytest
import torch

from detectron2.config import get_cfg

from depotr.cli import ConfigError
from depotr.config import add_depotr_config
from depotr.solver import apply_epoch_schedule, build_lr_scheduler, check_training_schedule


def _cfg(name, max_iter=100, warmup_iters=10, final=0.01):
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.SOLVER.LR_SCHEDULER_NAME = name
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.WARMUP_ITERS = warmup_iters
    cfg.SOLVER.WARMUP_FACTOR = 0.001
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.FINAL_LR_FACTOR = final
    return cfg


def _lrs_by_iteration(cfg, base_lrs=(1e-4, 1e-5)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base_lrs]
    optimizer = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)])
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def _decay(name, t, final):
    if name == "WarmupLinearLR":
        return 1 + (final - 1) * t
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def _expected_factor(name, it, max_iter=100, warmup_iters=10, warmup_factor=0.001, final=0.01):
    if it < warmup_iters:
        # Detectron2's WarmupParamScheduler: linear from warmup_factor x decay(0) to the decay's
        # value where warm-up ends.
        start = warmup_factor * _decay(name, 0.0, final)
        end = _decay(name, warmup_iters / max_iter, final)
        return start + (end - start) * it / warmup_iters
    return _decay(name, it / max_iter, final)


@pytest.mark.parametrize("name", ["WarmupLinearLR", "WarmupCosineLR"])
@pytest.mark.parametrize("iteration", [0, 5, 10, 50, 99])
def test_schedule_values(name, iteration):
    lrs = _lrs_by_iteration(_cfg(name))
    factor = _expected_factor(name, iteration)
    # Both groups (e.g. transformer and backbone) follow the same factor of their own lr.
    assert lrs[iteration][0] == pytest.approx(1e-4 * factor, rel=1e-6)
    assert lrs[iteration][1] == pytest.approx(1e-5 * factor, rel=1e-6)


def test_linear_schedule_ends_at_final_factor():
    lrs = _lrs_by_iteration(_cfg("WarmupLinearLR", max_iter=1000, warmup_iters=0))
    assert lrs[-1][0] == pytest.approx(1e-4 * (0.01 + 0.99 / 1000), rel=1e-6)


def test_detectron2_schedules_still_available():
    cfg = _cfg("WarmupMultiStepLR")
    cfg.SOLVER.STEPS = (50,)
    lrs = _lrs_by_iteration(cfg)
    assert lrs[60][0] == pytest.approx(1e-4 * cfg.SOLVER.GAMMA)


@pytest.mark.parametrize(
    "num_images, ims_per_batch, epochs, warmup_epochs, max_iter, warmup_iters",
    [(2000, 16, 2, 0.5, 250, 62), (10, 4, 3, 1, 9, 3), (100, 100, 1, 0, 1, 0)],
    ids=["2000img", "uneven", "one-batch"],
)
def test_epoch_schedule_conversion(num_images, ims_per_batch, epochs, warmup_epochs, max_iter, warmup_iters):
    cfg = _cfg("WarmupLinearLR")
    cfg.SOLVER.IMS_PER_BATCH = ims_per_batch
    cfg.SOLVER.MAX_EPOCHS = epochs
    cfg.SOLVER.WARMUP_EPOCHS = warmup_epochs
    apply_epoch_schedule(cfg, num_images)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS) == (max_iter, warmup_iters)


def test_epoch_schedule_needs_images():
    cfg = _cfg("WarmupLinearLR")
    cfg.SOLVER.MAX_EPOCHS = 1
    with pytest.raises(ValueError, match="non-empty training set"):
        apply_epoch_schedule(cfg, 0)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("SOLVER.WARMUP_ITERS", -5, "SOLVER.WARMUP_ITERS must be >= 0, got -5"),
        ("SOLVER.WARMUP_FACTOR", 5.0, "SOLVER.WARMUP_FACTOR must be in [0, 1] (a factor of the lr), got 5.0"),
        ("SOLVER.WARMUP_METHOD", "cosine", "SOLVER.WARMUP_METHOD must be one of ('linear', 'constant'), got 'cosine'"),
        ("SOLVER.LR_SCHEDULER_NAME", "Foo", "SOLVER.LR_SCHEDULER_NAME 'Foo': Unknown LR scheduler: Foo"),
        ("SOLVER.FINAL_LR_FACTOR", -0.5, "SOLVER.FINAL_LR_FACTOR must be >= 0, got -0.5"),
        ("SOLVER.CHECKPOINT_PERIOD", 0, "SOLVER.CHECKPOINT_PERIOD must be >= 1, got 0"),
        ("SOLVER.CHECKPOINT_PERIOD", -1, "SOLVER.CHECKPOINT_PERIOD must be >= 1, got -1"),
        ("TEST.EVAL_PERIOD", -1, "TEST.EVAL_PERIOD must be >= 0 (0: evaluate after training only), got -1"),
        ("SOLVER.OPTIMIZER", "lamb", "SOLVER.OPTIMIZER must be one of ('ADAMW', 'SGD'), got 'lamb'"),
        ("SOLVER.BASE_LR", -0.1, "SOLVER.BASE_LR must be > 0, got -0.1"),
        ("SOLVER.BACKBONE_MULTIPLIER", -1.0, "SOLVER.BACKBONE_MULTIPLIER must be >= 0 (a factor of SOLVER.BASE_LR)"),
        ("SOLVER.BETAS", (0.9,), "SOLVER.BETAS must be two numbers in [0, 1), got (0.9,)"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "foo", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of ('full_model', "),
        ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", -1.0, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got -1.0"),
    ],
)
def test_a_schedule_or_optimizer_key_that_cannot_train_is_a_config_error_naming_it(key, value, message):
    """The friction: these ended in tracebacks (an unknown name, CHECKPOINT_PERIOD 0's modulo by
    zero at the first step, BETAS' IndexError) or trained silently wrong (negative factors, a
    checkpoint every iteration for CHECKPOINT_PERIOD -1)."""
    cfg = _cfg("WarmupLinearLR")
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    check_training_schedule(cfg)  # the valid config passes
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError) as error:
        check_training_schedule(cfg)
    assert str(error.value).startswith(message)


def test_warm_up_epochs_are_checked_under_an_epoch_schedule():
    cfg = _cfg("WarmupLinearLR")
    cfg.SOLVER.MAX_EPOCHS, cfg.SOLVER.WARMUP_EPOCHS = 2, -1.0
    with pytest.raises(ConfigError, match=r"^SOLVER.WARMUP_EPOCHS must be >= 0, got -1.0$"):
        check_training_schedule(cfg)


def test_detectron2_schedule_names_pass_the_check():
    cfg = _cfg("WarmupMultiStepLR")
    cfg.SOLVER.STEPS = (50,)
    check_training_schedule(cfg)


@pytest.mark.parametrize("key", ["SOLVER.MAX_ITER", "SOLVER.WARMUP_ITERS"])
def test_an_iteration_override_that_an_epoch_schedule_would_replace_is_a_config_error(key):
    """The friction: ``SOLVER.MAX_ITER 10`` on a COCO config (MAX_EPOCHS 100) trained 100 epochs,
    the override replaced silently by apply_epoch_schedule."""
    cfg = _cfg("WarmupLinearLR")
    check_training_schedule(cfg, overrides=[key, "10"])  # iterations are the schedule: fine
    cfg.SOLVER.MAX_EPOCHS = 100
    check_training_schedule(cfg, overrides=["SOLVER.BASE_LR", "0.1"])
    with pytest.raises(ConfigError) as error:
        check_training_schedule(cfg, overrides=["SOLVER.BASE_LR", "0.1", key, "10"])
    assert str(error.value) == (
        f"{key} is set in the overrides, but SOLVER.MAX_EPOCHS=100 replaces it with the epochs' count "
        "(docs/config.md, Solver); add SOLVER.MAX_EPOCHS 0 to train by iterations"
    )
