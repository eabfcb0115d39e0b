"""Typed outputs of the keypoint branches: what ``KeypointBranch.forward`` returns and
``losses`` / ``decode`` / ``flip_back`` read. Each type knows how to flip itself back after a
horizontal flip of the crops and how two passes average (the flip test, ``modeling/tta.py``).

Shape letters: B crops, K keypoints, n decoder layers, (h, w) heatmap size. Fields of the auxiliary
outputs (decoder layers 0 .. n-2, deep supervision) are None when the branch has none.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar

from torch import Tensor

from ..tta import flip_coords, flip_heatmaps, swap_keypoints

__all__ = ["BranchOutputs", "HeatmapOutputs", "RLEOutputs", "RegressionOutputs"]

_Outputs = TypeVar("_Outputs", bound="BranchOutputs")


def _mean(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if (a is None) != (b is None):
        raise ValueError("cannot average outputs of which only one has an auxiliary output")
    return None if a is None else (a + b) / 2


@dataclass
class BranchOutputs:
    """Base of the output types: tensor (or None) fields only."""

    def average(self: _Outputs, other: _Outputs) -> _Outputs:
        """Elementwise mean of each field of two forward passes of the same branch (e.g. a crop
        and its flipped-back mirror); what each mean means is stated by the subclass."""
        if type(other) is not type(self):
            raise TypeError(f"cannot average {type(self).__name__} with {type(other).__name__}")
        means = {f.name: _mean(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)}
        return type(self)(**means)

    def halves(self: _Outputs) -> "tuple[_Outputs, _Outputs]":
        """The outputs of the first and of the second half of a batch of 2B crops, as two objects of
        this type. The batch is dimension 0 of a field, and dimension 1 of an ``aux_*`` field
        (decoder layers first). ``chunk`` keeps a traced export valid for any batch size."""
        parts = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            parts[f.name] = (None, None) if value is None else value.chunk(2, 1 if f.name.startswith("aux_") else 0)
        return type(self)(**{k: v[0] for k, v in parts.items()}), type(self)(**{k: v[1] for k, v in parts.items()})


@dataclass
class RegressionOutputs(BranchOutputs):
    """DePOTR's outputs with a confidence logit per keypoint.

    coords: (B, K, 2) (x, y) = continuous crop pixels / (W, H), in [0, 1].
    confidence: (B, K) logit that the keypoint is labelled and inside the crop.
    aux_coords, aux_confidence: (n-1, B, K, 2), (n-1, B, K) of decoder layers 0 .. n-2, or None.

    Averaging two passes averages the logits as logits (the score is the sigmoid of the mean
    logit, not the mean of the sigmoids).
    """

    coords: Tensor
    confidence: Tensor
    aux_coords: Optional[Tensor] = None
    aux_confidence: Optional[Tensor] = None

    def scores(self) -> Tensor:
        """(B, K) keypoint scores in (0, 1): sigmoid(logit)."""
        return self.confidence.sigmoid()

    def flip_back(self: _Outputs, flip_indices: Sequence[int]) -> _Outputs:
        """Outputs of mirrored crops -> outputs of the original crops: x -> 1 - x, and keypoint k
        takes the prediction of its mirror partner ``flip_indices[k]``; confidences are swapped
        only (a mirror keeps |x| errors: RLE's scales are not mirrored)."""

        def flip(coords: Optional[Tensor], confidence: Optional[Tensor]):
            if coords is None:
                return None, None
            return flip_coords(coords, flip_indices), swap_keypoints(confidence, flip_indices, coords.dim() - 2)

        coords, confidence = flip(self.coords, self.confidence)
        aux_coords, aux_confidence = flip(self.aux_coords, self.aux_confidence)
        return type(self)(coords, confidence, aux_coords, aux_confidence)


@dataclass
class RLEOutputs(RegressionOutputs):
    """DePOTR's outputs with RLE scales (Li et al. 2021) as the confidence: the fields of
    :class:`RegressionOutputs`, but ``confidence`` (B, K, 2) and ``aux_confidence``
    (n-1, B, K, 2) are the scales (sigma_x, sigma_y) in (0, 1), crop-normalised.

    Averaging two passes averages the sigmas as scales, so that the score 1 - mean sigma is the
    mean of the two passes' scores.
    """

    def scores(self) -> Tensor:
        """(B, K) keypoint scores in (0, 1): 1 - (sigma_x + sigma_y) / 2 (see ``rle_loss.py``)."""
        return 1 - self.confidence.mean(-1)


@dataclass
class HeatmapOutputs(BranchOutputs):
    """Heatmap heads' outputs (DePOTR-HM, SimpleBaseline, TransPose-R).

    heatmaps: (B, K, h, w) of stride s = H / h; heatmap pixel j covers crop pixels
        [j s, (j+1) s), its centre is crop pixel (j + 0.5) s.
    aux_heatmaps: (n-1, B, K, h, w) of decoder layers 0 .. n-2 (DePOTR-HM's deep supervision,
        while training), or None.

    Averaging two passes averages the heatmaps pixelwise.
    """

    heatmaps: Tensor
    aux_heatmaps: Optional[Tensor] = None

    def flip_back(self, flip_indices: Sequence[int], shift: bool = False) -> "HeatmapOutputs":
        """Outputs of mirrored crops -> outputs of the original crops: heatmaps mirrored along the
        width, left/right swapped, and with ``shift`` moved one pixel right (see
        :func:`~depotr.modeling.tta.flip_heatmaps`)."""
        aux = None if self.aux_heatmaps is None else flip_heatmaps(self.aux_heatmaps, flip_indices, shift)
        return HeatmapOutputs(flip_heatmaps(self.heatmaps, flip_indices, shift), aux)
