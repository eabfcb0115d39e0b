"""Test-time augmentation of the keypoint branches: the horizontal flip test and crop inference
with or without it. N persons, C channels, K keypoints, (H, W) crop size.

Flip test as SimpleBaseline (Xiao et al. 2018) / mmpose ``models/utils/tta.py``: the branch runs on
the crops and their mirrors in one batch, the mirrored outputs are mapped back (``flip_back`` of
``heads/outputs.py``, with the helpers below) and the two averaged. Crop coordinates mirror as
u -> W - u (pixel j -> W - 1 - j), crop-normalised ones as x -> 1 - x.
"""

from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import Tensor

from ..layers import autocast_to

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
    """(..., K, 2) crop-normalised (x, y) predicted on mirrored crops -> mirrored back (x -> 1 - x)
    with left/right keypoints swapped."""
    mirrored = torch.stack((1 - coords[..., 0], coords[..., 1]), dim=-1)
    return swap_keypoints(mirrored, flip_indices, coords.dim() - 2)


def flip_heatmaps(heatmaps: Tensor, flip_indices: Sequence[int], shift: bool = False) -> Tensor:
    """(..., K, h, w) heatmaps predicted on mirrored crops -> mirrored back along the width with
    left/right keypoints swapped (mmpose ``flip_heatmaps``).

    shift: move the result one pixel right, column 0 kept, as SimpleBaseline's flip test does.
    Its crops flip pixel indices (x -> W - 1 - x), which misaligns an array-flipped heatmap by 0.75
    heatmap pixels at stride 4; in our continuous convention (u -> W - u) the array flip is exact,
    so the shift adds a one-pixel bias. Kept for reproducing SimpleBaseline / the thesis only."""
    flipped = swap_keypoints(heatmaps.flip(-1), flip_indices, heatmaps.dim() - 3)
    if shift:
        flipped = torch.cat((flipped[..., :1], flipped[..., :-1]), dim=-1)
    return flipped


def flip_test(branch: "KeypointBranch", crops: Tensor, flip_indices: Sequence[int]) -> "BranchOutputs":
    """The branch's raw outputs (ready for ``branch.decode``) averaged over the (N, C, H, W) crops
    and their mirror images, run as one batch of 2N; ``flip_indices``: (K,) each keypoint's mirror
    partner."""
    outputs, mirrored = branch(torch.cat((crops, crops.flip(-1)))).halves()
    return outputs.average(branch.flip_back(mirrored, list(flip_indices)))


def predict_crop_keypoints(
    branch: "KeypointBranch",
    crops: Tensor,
    flip_indices: Optional[Sequence[int]] = None,
    precision: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> Tensor:
    """(N, K, 3) float32 decoded keypoints ((x, y) in crop pixels, score) of (N, C, H, W)
    normalised crops, with the flip test when ``flip_indices`` is given (the meta-architecture's
    inference and the exported pose branch). precision (``TEST.PRECISION``): float32, or bfloat16 /
    float16 for the branch under ``torch.autocast`` (the decoding stays float32, and under bfloat16
    the heads, reference points and sampling locations too). channels_last: ``TEST.CHANNELS_LAST``."""
    if channels_last:
        crops = crops.contiguous(memory_format=torch.channels_last)
    with autocast_to(crops.device.type, precision):
        outputs = branch(crops) if flip_indices is None else flip_test(branch, crops, flip_indices)
    return branch.decode(outputs)
