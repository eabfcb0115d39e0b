"""The one geometric training augmentation, applied at crop time (``INPUT.CROP_AUG``). N persons,
K keypoints.

SimpleBaseline / HRNet / mmpose's chain, per training person: half-body box
(:class:`HalfBodyBoxes`) -> box scale and shift jitter (:func:`jitter_boxes`) -> the crop box
(grown to the crop aspect, times ``INPUT.CROP_PADDING``) -> rotation about the crop centre ->
horizontal flip. The result is the person's crop parameters (``depotr.modeling.crops``); the crop
and the keypoint targets go through that one affine, and the keypoints of a flipped crop swap left
and right. Rotating the crop box about the person keeps the person's size in the crop.

All draws use the torch RNG of the boxes' device, which the trainer seeds per iteration
(``IterationSeedHook``), so a resumed run augments as an uninterrupted one.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..cli import ConfigError
from ..data.keypoint_metadata import keypoint_metadata_from_config, upper_body_mask
from .crops import box_crop_params, expand_boxes_to_aspect

__all__ = ["DISTRIBUTIONS", "jitter_boxes", "draw_angles", "HalfBodyBoxes", "CropAugmentation"]

# INPUT.CROP_AUG.SCALE_DISTRIBUTION and ROTATION_DISTRIBUTION values.
DISTRIBUTIONS = ("uniform", "normal")


def _check_distribution(distribution: str, key: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"INPUT.CROP_AUG.{key} must be one of {DISTRIBUTIONS}, got {distribution!r}")


def _check_jitter(scale: float, shift: float, distribution: str) -> None:
    if not 0.0 <= scale < 1.0 or shift < 0.0:
        raise ValueError(f"need 0 <= INPUT.CROP_AUG.SCALE_FACTOR < 1 and SHIFT_FACTOR >= 0, got {scale}, {shift}")
    _check_distribution(distribution, "SCALE_DISTRIBUTION")


def _draw(shape: Tuple[int, ...], distribution: str, like: Tensor) -> Tensor:
    """r from U[-1, 1] ("uniform") or N(0, 1) clipped to [-1, 1] ("normal"), dtype / device of ``like``."""
    if distribution == "uniform":
        return torch.rand(shape, dtype=like.dtype, device=like.device) * 2.0 - 1.0
    return torch.randn(shape, dtype=like.dtype, device=like.device).clamp(-1.0, 1.0)


def jitter_boxes(boxes: Tensor, scale: float, shift: float, distribution: str = "uniform") -> Tensor:
    """Rescales and shifts each of the (N, 4) XYXY boxes independently: width and height times
    1 + r_0 scale, the centre moved by r_1 shift width and r_2 shift height, r_i drawn by
    ``distribution`` ("normal" as SimpleBaseline / HRNet's ``clip(randn() * sf + 1, 1 - sf,
    1 + sf)``; about 32 % land on a bound). Needs 0 <= scale < 1, shift >= 0."""
    _check_jitter(scale, shift, distribution)
    if boxes.numel() == 0 or (scale == 0.0 and shift == 0.0):
        return boxes
    r = _draw((len(boxes), 3), distribution, boxes)
    size = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5 + r[:, 1:] * shift * size
    half = size * (1.0 + r[:, :1] * scale) * 0.5
    return torch.cat([centre - half, centre + half], dim=1)


def draw_angles(num: int, degrees: float, prob: float, distribution: str, like: Tensor) -> Tensor:
    """(num,) rotation angles in degrees: with probability ``prob`` each, uniform in +-degrees or
    ("normal") N(0, degrees) clipped to +-2 degrees (SimpleBaseline / HRNet's
    ``clip(randn() * rf, -2 rf, 2 rf)``); else 0. dtype and device of ``like``."""
    _check_distribution(distribution, "ROTATION_DISTRIBUTION")
    apply = torch.rand(num, dtype=like.dtype, device=like.device) < prob
    if distribution == "uniform":
        angles = _draw((num,), "uniform", like) * degrees
    else:
        angles = (torch.randn(num, dtype=like.dtype, device=like.device) * degrees).clamp(-2 * degrees, 2 * degrees)
    return torch.where(apply, angles, torch.zeros_like(angles))


class HalfBodyBoxes:
    """Half-body augmentation of training person boxes (SimpleBaseline / HRNet's
    ``half_body_transform``): crops of the upper or the lower body only, so that the model learns
    truncated persons.

    Per person with at least ``min_keypoints`` labelled (v > 0) keypoints, with probability
    ``prob``: a body half qualifies with at least ``min_part_keypoints`` labelled keypoints; of two
    one is drawn with probability 1/2 (HRNet draws ``np.random.randn() < 0.5``, 69 % upper,
    evidently meant as a fair coin). The new box is that half's labelled keypoints' box grown to
    the crop aspect W:H and scaled by ``padding`` (``expand_boxes_to_aspect``; HRNet centres it on
    the keypoints' mean, which can leave keypoints outside). Persons without a qualifying half, or
    whose chosen keypoints all coincide, keep their box.
    """

    def __init__(
        self,
        upper_body: Sequence[bool],
        crop_size: Sequence[int],
        prob: float,
        min_keypoints: int = 9,
        min_part_keypoints: int = 3,
        padding: float = 1.2,
    ):
        """upper_body: (K,) whether each keypoint is in the upper half
        (``keypoint_metadata.upper_body_mask``). The other arguments are ``INPUT.CROP_AUG``'s
        ``HALF_BODY_*`` keys: prob in [0, 1], min_part_keypoints >= 2, padding >= 1."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"INPUT.CROP_AUG.HALF_BODY_PROB must be in [0, 1], got {prob}")
        if min_part_keypoints < 2:
            raise ValueError(
                "INPUT.CROP_AUG.HALF_BODY_MIN_PART_KEYPOINTS must be >= 2 (a box needs 2 points), "
                f"got {min_part_keypoints}"
            )
        if padding < 1.0:
            raise ValueError(f"INPUT.CROP_AUG.HALF_BODY_PADDING must be >= 1, got {padding}")
        if all(upper_body) or not any(upper_body):
            missing = "lower" if all(upper_body) else "upper"
            raise ValueError(
                f"INPUT.CROP_AUG.HALF_BODY_PROB {prob}: the half-body augmentation needs upper- and lower-body "
                f"keypoints, but none of the {len(upper_body)} is {missing}-body; switch it off with "
                "INPUT.CROP_AUG.HALF_BODY_PROB 0"
            )
        self.upper_body = [bool(u) for u in upper_body]
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.prob = float(prob)
        self.min_keypoints = int(min_keypoints)
        self.min_part_keypoints = int(min_part_keypoints)
        self.padding = float(padding)

    def __call__(self, boxes: Tensor, keypoints: Tensor) -> Tensor:
        """(N, 4) XYXY person boxes and (N, K, 3) keypoints (x, y, v) in image pixels -> (N, 4)
        boxes, half-body boxes where drawn. Two draws per person."""
        if keypoints.shape[1] != len(self.upper_body):
            raise ValueError(f"half-body augmentation for {len(self.upper_body)} keypoints got {keypoints.shape[1]}")
        r = torch.rand((len(boxes), 2), dtype=boxes.dtype, device=boxes.device)
        labelled = keypoints[..., 2] > 0
        upper = torch.tensor(self.upper_body, device=keypoints.device)
        in_upper, in_lower = labelled & upper, labelled & ~upper
        upper_ok = in_upper.sum(1) >= self.min_part_keypoints
        lower_ok = in_lower.sum(1) >= self.min_part_keypoints
        take_upper = upper_ok & (~lower_ok | (r[:, 1] < 0.5))
        chosen = torch.where(take_upper[:, None], in_upper, in_lower)  # (N, K)
        far = torch.finfo(keypoints.dtype).max
        low = torch.where(chosen[..., None], keypoints[..., :2], far).amin(1)  # (N, 2) x0, y0
        high = torch.where(chosen[..., None], keypoints[..., :2], -far).amax(1)
        use = (labelled.sum(1) >= self.min_keypoints) & (r[:, 0] < self.prob) & (upper_ok | lower_ok)
        use &= (high > low).any(1)
        tight = torch.where(use[:, None], torch.cat([low, high], dim=1).to(boxes.dtype), boxes)
        return torch.where(use[:, None], expand_boxes_to_aspect(tight, self.crop_size, self.padding), boxes)


class CropAugmentation:
    """The module's chain: (boxes, keypoints) of training persons -> their crop parameters and
    their keypoints in the order the (possibly flipped) crops show them."""

    def __init__(
        self,
        *,
        crop_size: Sequence[int],
        padding: float,
        flip_indices: Sequence[int],
        flip_prob: float = 0.5,
        scale: float = 0.0,
        shift: float = 0.0,
        scale_distribution: str = "uniform",
        rotation_degrees: float = 0.0,
        rotation_prob: float = 0.0,
        rotation_distribution: str = "uniform",
        half_body: Optional[HalfBodyBoxes] = None,
    ):
        """flip_indices: (K,) index of each keypoint's mirror partner; flip_prob: per person.
        scale, shift, scale_distribution: :func:`jitter_boxes`; rotation_*: :func:`draw_angles`.
        half_body: applied first; None: off."""
        for name, prob in (("FLIP_PROB", flip_prob), ("ROTATION_PROB", rotation_prob)):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"INPUT.CROP_AUG.{name} must be in [0, 1], got {prob}")
        _check_jitter(scale, shift, scale_distribution)
        _check_distribution(rotation_distribution, "ROTATION_DISTRIBUTION")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        if half_body is not None and half_body.crop_size != self.crop_size:
            raise ValueError(f"half_body crop_size {half_body.crop_size} differs from {self.crop_size}")
        self.padding = float(padding)
        self.flip_indices = torch.as_tensor(list(flip_indices), dtype=torch.int64)
        self.flip_prob = float(flip_prob)
        self.scale, self.shift, self.scale_distribution = float(scale), float(shift), scale_distribution
        self.rotation = (float(rotation_degrees), float(rotation_prob), rotation_distribution)
        self.half_body = half_body

    @classmethod
    def from_config(cls, cfg) -> Optional["CropAugmentation"]:
        """The chain of ``cfg.INPUT.CROP_AUG``; None when ``ENABLED`` is off. A ConfigError for a
        ``HALF_BODY_*`` value or, with ``HALF_BODY_PROB`` > 0, keypoints (``MODEL.DEPOTR.KEYPOINT_NAMES``)
        without an upper and a lower body half in the keypoint tables."""
        aug = cfg.INPUT.CROP_AUG
        if not aug.ENABLED:
            return None
        keypoints = keypoint_metadata_from_config(cfg)
        half_body = None
        if aug.HALF_BODY_PROB > 0:
            try:
                half_body = HalfBodyBoxes(
                    upper_body_mask(keypoints.names),
                    cfg.INPUT.CROP_SIZE,
                    aug.HALF_BODY_PROB,
                    aug.HALF_BODY_MIN_KEYPOINTS,
                    aug.HALF_BODY_MIN_PART_KEYPOINTS,
                    aug.HALF_BODY_PADDING,
                )
            except ValueError as e:  # a HALF_BODY_* value, or keypoints without both body halves
                raise ConfigError(str(e)) from e
        return cls(
            crop_size=cfg.INPUT.CROP_SIZE,
            padding=cfg.INPUT.CROP_PADDING,
            flip_indices=keypoints.flip_indices,
            flip_prob=aug.FLIP_PROB,
            scale=aug.SCALE_FACTOR,
            shift=aug.SHIFT_FACTOR,
            scale_distribution=aug.SCALE_DISTRIBUTION,
            rotation_degrees=aug.ROTATION_DEGREES,
            rotation_prob=aug.ROTATION_PROB,
            rotation_distribution=aug.ROTATION_DISTRIBUTION,
            half_body=half_body,
        )

    def __call__(self, boxes: Tensor, keypoints: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, 4) XYXY person boxes and (N, K, 3) keypoints (x, y, v) in image pixels -> (N, 6)
        crop parameters and the keypoints, still in image pixels, with left and right swapped
        where the crop is flipped: ``image_to_crop(keypoints, params)`` are the crops' targets."""
        if len(self.flip_indices) != keypoints.shape[1]:
            raise ValueError(f"{len(self.flip_indices)} flip indices for {keypoints.shape[1]} keypoints")
        if self.half_body is not None:
            boxes = self.half_body(boxes, keypoints)
        boxes = jitter_boxes(boxes, self.scale, self.shift, self.scale_distribution)
        params = box_crop_params(boxes, self.crop_size, self.padding)
        params[:, 4] = draw_angles(len(boxes), *self.rotation, like=boxes)
        flip = torch.rand(len(boxes), dtype=boxes.dtype, device=boxes.device) < self.flip_prob
        params[:, 5] = flip.to(boxes.dtype)
        swapped = keypoints[:, self.flip_indices.to(keypoints.device)]
        return params, torch.where(flip[:, None, None], swapped, keypoints)
