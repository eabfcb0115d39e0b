"""Test-time augmentation of the keypoint branches: the horizontal flip test, for every branch
(regression and heatmap heads), and crop inference with or without it.

Shape letters: N persons, C channels, K keypoints, (H, W) crop size, (h, w) heatmap size.

Flip test as in SimpleBaseline (Xiao et al. 2018) / mmpose ``models/utils/tta.py``: run the
branch on the crops and on their horizontal mirrors (in one batch), map the mirrored outputs back (mirror the
coordinates or heatmaps, swap left/right keypoints: the branch's ``flip_back``, which also does
any heatmap shift) and average the two (the outputs type's ``average``). Crop coordinates mirror
as u -> W - u (pixel j -> W - 1 - j); crop-normalised ones as x -> 1 - x.

The flip helpers below are the ones the output types of ``heads/outputs.py`` flip back with.
"""

from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only: the branches import this module's helpers through their outputs
    from .heads.outputs import BranchOutputs
    from .keypoint_branches import KeypointBranch

__all__ = ["flip_coords", "flip_heatmaps", "flip_test", "predict_crop_keypoints", "swap_keypoints"]


def swap_keypoints(values: Tensor, flip_indices: Sequence[int], dim: int) -> Tensor:
    """values with keypoint k along ``dim`` replaced by keypoint ``flip_indices[k]``, its
    left/right mirror partner."""
    index = torch.as_tensor(list(flip_indices), dtype=torch.long, device=values.device)
    return values.index_select(dim, index)


def flip_coords(coords: Tensor, flip_indices: Sequence[int]) -> Tensor:
    """coords: (..., K, 2) crop-normalised (x, y) predicted on mirrored crops. Returns them
    mirrored back (x -> 1 - x) with left/right keypoints swapped."""
    mirrored = torch.stack((1 - coords[..., 0], coords[..., 1]), dim=-1)
    return swap_keypoints(mirrored, flip_indices, coords.dim() - 2)


def flip_heatmaps(heatmaps: Tensor, flip_indices: Sequence[int], shift: bool = False) -> Tensor:
    """heatmaps: (..., K, h, w) predicted on mirrored crops. Returns them mirrored back along the
    width with left/right keypoints swapped (mmpose ``flip_heatmaps``).

    shift: move the result one pixel right, column 0 kept, as SimpleBaseline's flip test does
    (``output_flipped[..., 1:] = output_flipped[..., :-1]``). Its crops flip
    pixel indices (x -> W - 1 - x), which misaligns an array-flipped heatmap by 0.75 heatmap
    pixels at stride 4; in our continuous convention (u -> W - u) the array flip is exact, so the
    shift would add a one-pixel bias. Kept for reproducing SimpleBaseline / the thesis only."""
    flipped = swap_keypoints(heatmaps.flip(-1), flip_indices, heatmaps.dim() - 3)
    if shift:
        flipped = torch.cat((flipped[..., :1], flipped[..., :-1]), dim=-1)
    return flipped


def flip_test(branch: "KeypointBranch", crops: Tensor, flip_indices: Sequence[int]) -> "BranchOutputs":
    """Returns the branch's raw outputs averaged over the crops and their mirror images.

    Args:
        branch: a keypoint branch (``forward``, ``flip_back(outputs, flip_indices)``); its outputs
            average with their type's ``average``.
        crops: (N, C, H, W) normalised person crops.
        flip_indices: (K,) for each keypoint the index of its mirror partner.

    Returns:
        Raw outputs of the type of ``branch(crops)``, ready for ``branch.decode``.

    The crops and their mirrors go through the branch as one batch of 2N (one pass over the
    weights instead of two; every layer treats crops independently at inference).
    """
    outputs, mirrored = branch(torch.cat((crops, crops.flip(-1)))).halves()
    return outputs.average(branch.flip_back(mirrored, list(flip_indices)))


def predict_crop_keypoints(
    branch: "KeypointBranch", crops: Tensor, flip_indices: Optional[Sequence[int]] = None
) -> Tensor:
    """Decoded keypoints of normalised crops, with the flip test when ``flip_indices`` is given:
    what the meta-architecture's inference and the exported pose branch compute on crops.

    Args:
        branch: a keypoint branch (``forward``, ``decode``, ``flip_back``).
        crops: (N, C, H, W) normalised person crops.
        flip_indices: (K,) for each keypoint the index of its mirror partner; None: no flip test.

    Returns:
        (N, K, 3): (x, y) in crop pixels and the branch's score.
    """
    outputs = branch(crops) if flip_indices is None else flip_test(branch, crops, flip_indices)
    return branch.decode(outputs)
