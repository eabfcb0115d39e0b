"""load_depotr_config: yaml + overrides on top of Detectron2's and DePOTR's defaults."""

import os

import pytest
import torch

from depotr.config import load_depotr_config

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "depotr_r50.yaml")


def test_yaml_and_overrides_are_applied():
    cfg = load_depotr_config(CONFIG, ["MODEL.DEPOTR.ENC_LAYERS", "2", "INPUT.CROP_SIZE", "(128, 96)"])
    assert cfg.MODEL.META_ARCHITECTURE == "TopDownPoseEstimator"
    assert cfg.MODEL.DEPOTR.HEAD == "regression"
    assert cfg.MODEL.DEPOTR.ENC_LAYERS == 2
    assert tuple(cfg.INPUT.CROP_SIZE) == (128, 96)


def test_unknown_override_key_raises():
    # yacs (Detectron2's config) rejects it with an AssertionError naming the key.
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.DEPOTR.ENC_LAYER"):
        load_depotr_config(CONFIG, ["MODEL.DEPOTR.ENC_LAYER", "2"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_cuda_device_falls_back_to_cpu_without_cuda():
    assert load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda"]).MODEL.DEVICE == "cpu"
    assert load_depotr_config(CONFIG, ["MODEL.DEVICE", "cpu"]).MODEL.DEVICE == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback applies only without CUDA")
def test_amp_is_switched_off_on_cpu():
    cfg = load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    assert cfg.MODEL.DEVICE == "cpu" and not cfg.SOLVER.AMP.ENABLED


def test_amp_setting_kept_on_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_depotr_config(CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"])
    assert cfg.MODEL.DEVICE == "cuda" and cfg.SOLVER.AMP.ENABLED
