"""INPUT.AUG.ROTATION_DISTRIBUTION: the rotation angle drawn uniformly or as HRNet's clipped normal."""

import numpy as np
import pytest

from detectron2.config import get_cfg

from depotr.config import add_depotr_config
from depotr.data.augmentation import NormalRotate, build_albumentations, build_albumentations_from_cfg


def _angles(distribution: str, degrees: float, draws: int = 400) -> np.ndarray:
    """Angles (degrees) by which the rotation-only pipeline moves a point about the centre of a
    33x33 image (Albumentations rotates about pixel (16, 16))."""
    pipeline = build_albumentations(
        flip_prob=0.0,
        rotation_degrees=degrees,
        rotation_prob=1.0,
        rotation_distribution=distribution,
        blur_prob=0.0,
        rgb_shift_prob=0.0,
        brightness_contrast_prob=0.0,
        seed=0,
    )
    image = np.zeros((33, 33, 3), np.uint8)
    angles = []
    for _ in range(draws):
        x, y = pipeline(image=image, keypoints=np.array([[26.0, 16.0]], np.float32))["keypoints"][0]
        angles.append(np.degrees(np.arctan2(y - 16, x - 16)))
    return np.asarray(angles)


@pytest.mark.parametrize("distribution, beyond, bound", [("uniform", 0.0, 10.0), ("normal", 0.317, 20.0)])
def test_rotation_angle_distribution(distribution, beyond, bound):
    """uniform in +-10; normal N(0, 10) clipped to +-20: 2 P(N > 1) = 31.7 % beyond 10 degrees."""
    angles = np.abs(_angles(distribution, 10.0))
    assert angles.max() <= bound + 1e-3
    assert (angles > 10.0 + 1e-3).mean() == pytest.approx(beyond, abs=0.05)
    if distribution == "normal":
        assert (angles > 20.0 - 1e-3).mean() == pytest.approx(0.0455, abs=0.025)  # clipped at 2 sigma


def test_rotation_distribution_from_config_and_errors():
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.INPUT.AUG.ROTATION_DISTRIBUTION = "normal"
    cfg.INPUT.AUG.ROTATION_DEGREES = 45.0
    rotations = [t for t in build_albumentations_from_cfg(cfg, True).transforms if isinstance(t, NormalRotate)]
    assert len(rotations) == 1 and rotations[0].sigma == 45.0 and rotations[0].limit == (-90.0, 90.0)
    cfg.INPUT.AUG.ROTATION_DISTRIBUTION = "gaussian"
    with pytest.raises(ValueError, match="ROTATION_DISTRIBUTION must be one of"):
        build_albumentations_from_cfg(cfg, True)
