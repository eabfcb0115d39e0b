"""Training augmentation with Albumentations, keeping keypoints and boxes consistent.

N persons, K keypoints, M proposal boxes.

Coordinates: the mapper works in Detectron2's continuous convention (pixel i spans [i, i + 1),
its centre is i + 0.5); Albumentations uses pixel indices (horizontal flip x -> W - 1 - x,
rotation about ((W - 1) / 2, (H - 1) / 2)). :class:`KeypointAugmenter` subtracts 0.5 before
and adds it back after, so both conventions agree with the transformed image.

Boxes: each box's four corners travel as keypoints; the new box is the min/max of the moved
corners clipped to the image (the "largest box" rule: after a rotation the box encloses the
rotated box, so it still encloses the person).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np

__all__ = [
    "NormalRotate",
    "ROTATION_DISTRIBUTIONS",
    "KeypointAugmenter",
    "build_albumentations",
    "build_albumentations_from_cfg",
]

# INPUT.AUG.ROTATION_DISTRIBUTION values.
ROTATION_DISTRIBUTIONS = ("uniform", "normal")


class NormalRotate(A.Rotate):
    """``A.Rotate`` (black border) whose angle is drawn from N(0, sigma) clipped to +-2 sigma
    degrees, SimpleBaseline / HRNet's ``clip(randn() * rf, -2 rf, 2 rf)``, instead of uniformly
    (``A.Rotate`` draws ``uniform(*limit)``: the drawn angle is passed to it as a one-point
    ``limit`` for that call, so the rotation itself is Albumentations' own)."""

    def __init__(self, sigma: float, p: float = 0.5):
        super().__init__(limit=(-2 * sigma, 2 * sigma), border_mode=cv2.BORDER_CONSTANT, fill=0, p=p)
        self.sigma = sigma

    def get_params_dependent_on_data(self, params: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
        angle = min(max(self.py_random.gauss(0.0, self.sigma), -2 * self.sigma), 2 * self.sigma)
        bounds, self.limit = self.limit, (angle, angle)
        try:
            return super().get_params_dependent_on_data(params, data)
        finally:
            self.limit = bounds


def build_albumentations(
    *,
    flip_prob: float = 0.5,
    rotation_degrees: float = 10.0,
    rotation_prob: float = 0.5,
    rotation_distribution: str = "uniform",
    blur_prob: float = 0.1,
    rgb_shift_prob: float = 0.2,
    brightness_contrast_prob: float = 0.3,
    seed: Optional[int] = None,
) -> A.Compose:
    """The DePOTR training pipeline: HorizontalFlip, Rotate (black border; "uniform" in
    +-rotation_degrees, or "normal": :class:`NormalRotate` with sigma = rotation_degrees),
    GaussianBlur, RGBShift, RandomBrightnessContrast, each applied with its probability.
    Keypoints are kept even when they leave the image (``remove_invisible=False``) and the
    applied transforms are recorded (needed to swap left/right after a flip)."""
    if rotation_distribution not in ROTATION_DISTRIBUTIONS:
        raise ValueError(
            f"INPUT.AUG.ROTATION_DISTRIBUTION must be one of {ROTATION_DISTRIBUTIONS}, got {rotation_distribution!r}"
        )
    if rotation_distribution == "normal":
        rotate = NormalRotate(rotation_degrees, p=rotation_prob)
    else:
        rotate = A.Rotate(
            limit=(-rotation_degrees, rotation_degrees), border_mode=cv2.BORDER_CONSTANT, fill=0, p=rotation_prob
        )
    return A.Compose(
        [
            A.HorizontalFlip(p=flip_prob),
            rotate,
            A.GaussianBlur(p=blur_prob),
            A.RGBShift(p=rgb_shift_prob),
            A.RandomBrightnessContrast(p=brightness_contrast_prob),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
        save_applied_params=True,
        seed=seed,
    )


def build_albumentations_from_cfg(cfg, is_train: bool) -> Optional[A.Compose]:
    """:func:`build_albumentations` from ``cfg.INPUT.AUG``; None at test time or when
    ``INPUT.AUG.ENABLED`` is off."""
    aug = cfg.INPUT.AUG
    if not is_train or not aug.ENABLED:
        return None
    return build_albumentations(
        flip_prob=aug.FLIP_PROB,
        rotation_degrees=aug.ROTATION_DEGREES,
        rotation_prob=aug.ROTATION_PROB,
        rotation_distribution=aug.ROTATION_DISTRIBUTION,
        blur_prob=aug.BLUR_PROB,
        rgb_shift_prob=aug.RGB_SHIFT_PROB,
        brightness_contrast_prob=aug.BRIGHTNESS_CONTRAST_PROB,
    )


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(B, 4) XYXY -> (B * 4, 2) corners."""
    x0, y0, x1, y1 = boxes.T
    return np.stack(
        [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], 1
    ).reshape(-1, 2)


def _boxes_from_corners(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """(B * 4, 2) -> (B, 4) XYXY enclosing box, clipped to the image."""
    c = corners.reshape(-1, 4, 2)
    boxes = np.concatenate([c.min(1), c.max(1)], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


class KeypointAugmenter:
    """Applies an Albumentations pipeline to an image, its persons' keypoints and boxes and
    proposal boxes; swaps left/right keypoints after an odd number of horizontal flips."""

    def __init__(self, transform: A.Compose, flip_indices: Sequence[int]):
        """
        Args:
            transform: built like :func:`build_albumentations` (keypoint format "xy",
                ``remove_invisible=False``, ``save_applied_params=True``).
            flip_indices: (K,) index of each keypoint's mirror partner
                (``keypoint_metadata.flip_indices``).
        """
        if not transform.save_applied_params:
            raise ValueError("KeypointAugmenter needs A.Compose(..., save_applied_params=True) to detect flips")
        self.transform = transform
        self.flip_indices = np.asarray(flip_indices, dtype=np.int64)

    def _reseed(self) -> None:
        # Albumentations keeps its own random state. Drawing its seed from NumPy's global RNG on
        # every call ties the augmentation to the seeds Detectron2 sets: per data-loader worker
        # (different workers augment differently) and, in the main process, per iteration
        # (IterationSeedHook), so a resumed run augments exactly like an uninterrupted one.
        self.transform.set_random_seed(int(np.random.randint(2**31)))

    def __call__(
        self, image: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray, proposal_boxes: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """
        Args:
            image: (H, W, C) uint8.
            keypoints: (N, K, 3) x, y, v in continuous image coordinates.
            boxes: (N, 4) XYXY_ABS person boxes. proposal_boxes: (M, 4) XYXY_ABS or None.
        Returns:
            image (H', W', C); keypoints (N, K, 3) with v = 0 and x = y = 0 for keypoints that
            are unlabelled or left [0, W'] x [0, H']; boxes (N, 4) and proposal_boxes (M, 4)
            enclosing the moved corners, clipped to the image (may be empty after clipping).
        """
        self._reseed()
        n, k = keypoints.shape[:2]
        props = np.zeros((0, 4), np.float32) if proposal_boxes is None else proposal_boxes
        points = np.concatenate([keypoints[..., :2].reshape(-1, 2), _corners(boxes), _corners(props)], 0)
        out = self.transform(image=image, keypoints=points.astype(np.float32) - 0.5)
        image = out["image"]
        height, width = image.shape[:2]
        points = np.asarray(out["keypoints"], dtype=np.float32).reshape(-1, 2) + 0.5

        xy = points[: n * k].reshape(n, k, 2)
        inside = (xy[..., 0] >= 0) & (xy[..., 0] <= width) & (xy[..., 1] >= 0) & (xy[..., 1] <= height)
        vis = np.where(inside, keypoints[..., 2], 0).astype(np.float32)
        new_kps = np.concatenate([xy, vis[..., None]], -1)
        new_kps[new_kps[..., 2] == 0, :2] = 0
        flips = sum(1 for name, _ in out["applied_transforms"] if name == "HorizontalFlip")
        if flips % 2 == 1:
            new_kps = new_kps[:, self.flip_indices]
        new_boxes = _boxes_from_corners(points[n * k : n * k + 4 * n], width, height)
        new_props = _boxes_from_corners(points[n * k + 4 * n :], width, height)
        return image, new_kps, new_boxes, (None if proposal_boxes is None else new_props)
