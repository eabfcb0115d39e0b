"""Typed outputs of the keypoint branches (``KeypointBranch.forward``); each type knows how to flip
itself back after a horizontal flip of the crops and how two passes average (``modeling/tta.py``).
B crops, K keypoints, n decoder layers, (h, w) heatmap size. The ``aux_*`` fields (decoder layers
0 .. n-2, deep supervision) are None when the branch has none.
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
        """Elementwise mean of each field of two passes of the same branch (e.g. crop and mirror)."""
        if type(other) is not type(self):
            raise TypeError(f"cannot average {type(self).__name__} with {type(other).__name__}")
        means = {f.name: _mean(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)}
        return type(self)(**means)

    def halves(self: _Outputs) -> "tuple[_Outputs, _Outputs]":
        """The outputs of the first and second half of a batch of 2B crops (dimension 0, of ``aux_*``
        fields 1). ``chunk`` keeps a traced export valid for any batch size."""
        first, second = {}, {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            halves = (None, None) if value is None else value.chunk(2, 1 if f.name.startswith("aux_") else 0)
            first[f.name], second[f.name] = halves
        return type(self)(**first), type(self)(**second)


@dataclass
class RegressionOutputs(BranchOutputs):
    """DePOTR's outputs with a confidence logit per keypoint; two passes average their logits.

    coords: (B, K, 2) (x, y) = continuous crop pixels / (W, H), in [0, 1].
    confidence: (B, K) logit that the keypoint is labelled and inside the crop.
    aux_coords, aux_confidence: (n-1, B, K, 2), (n-1, B, K), or None.
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
        aux = ()
        if self.aux_coords is not None:
            aux = (flip_coords(self.aux_coords, flip_indices), swap_keypoints(self.aux_confidence, flip_indices, 2))
        return type(self)(
            flip_coords(self.coords, flip_indices), swap_keypoints(self.confidence, flip_indices, 1), *aux
        )


@dataclass
class RLEOutputs(RegressionOutputs):
    """DePOTR's outputs with RLE scales (Li et al. 2021) as the confidence: ``confidence``
    (B, K, 2) and ``aux_confidence`` (n-1, B, K, 2) are (sigma_x, sigma_y) in (0, 1),
    crop-normalised. Two passes average their sigmas, so the score 1 - mean sigma is the mean of
    the two passes' scores."""

    def scores(self) -> Tensor:
        """(B, K) keypoint scores in (0, 1): 1 - (sigma_x + sigma_y) / 2 (see ``rle_loss.py``)."""
        return 1 - self.confidence.mean(-1)


@dataclass
class HeatmapOutputs(BranchOutputs):
    """Heatmap heads' outputs; two passes average pixelwise.

    heatmaps: (B, K, h, w) of stride s = H / h; heatmap pixel j covers crop pixels [j s, (j+1) s).
    aux_heatmaps: (n-1, B, K, h, w) (DePOTR-HM's deep supervision, while training), or None.
    """

    heatmaps: Tensor
    aux_heatmaps: Optional[Tensor] = None

    def flip_back(self, flip_indices: Sequence[int], shift: bool = False) -> "HeatmapOutputs":
        """Outputs of mirrored crops -> outputs of the original crops: heatmaps mirrored along the
        width, left/right swapped, with ``shift`` moved one pixel right (``tta.flip_heatmaps``)."""
        aux = None if self.aux_heatmaps is None else flip_heatmaps(self.aux_heatmaps, flip_indices, shift)
        return HeatmapOutputs(flip_heatmaps(self.heatmaps, flip_indices, shift), aux)
