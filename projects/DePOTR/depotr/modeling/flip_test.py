"""The one flip-test helper, used for every keypoint branch (regression and heatmap heads).

Shape letters: N persons, C channels, (H, W) crop size.

Flip test as in SimpleBaseline (Xiao et al. 2018) / mmpose ``models/utils/tta.py``: run the
branch on the crops and on their horizontal mirrors, map the mirrored outputs back (mirror the
coordinates or heatmaps, swap left/right keypoints: the branch's ``flip_back``, which also does
any heatmap shift) and average (``depotr.modeling.average_outputs``). Crop coordinates mirror as
u -> W - u (pixel j -> W - 1 - j).
"""
from typing import Callable, Dict, Optional, Sequence

from torch import Tensor, nn

__all__ = ["flip_test", "predict_crop_keypoints"]

Outputs = Dict[str, Tensor]


def flip_test(
    branch: nn.Module,
    crops: Tensor,
    flip_indices: Sequence[int],
    average_outputs: Optional[Callable[[Outputs, Outputs], Outputs]] = None,
) -> Outputs:
    """Returns the branch's raw outputs averaged over the crops and their mirror images.

    Args:
        branch: a keypoint branch (``forward``, ``flip_back(outputs, flip_indices)``).
        crops: (N, C, H, W) normalised person crops.
        flip_indices: for each keypoint the index of its mirror partner.
        average_outputs: how to average two output dicts; default
            ``depotr.modeling.average_outputs``.

    Returns:
        Raw outputs in the format of ``branch(crops)``, ready for ``branch.decode``.
    """
    if average_outputs is None:
        from depotr.modeling import average_outputs
    outputs = branch(crops)
    mirrored = branch.flip_back(branch(crops.flip(-1)), list(flip_indices))
    return average_outputs(outputs, mirrored)


def predict_crop_keypoints(
    branch: nn.Module,
    crops: Tensor,
    flip_indices: Optional[Sequence[int]] = None,
    average_outputs: Optional[Callable[[Outputs, Outputs], Outputs]] = None,
) -> Tensor:
    """Decoded keypoints of normalised crops, with the flip test when ``flip_indices`` is given:
    what the meta-architecture's inference and the exported pose branch compute on crops.

    Args:
        branch: a keypoint branch (``forward``, ``decode``, ``flip_back``).
        crops: (N, C, H, W) normalised person crops.
        flip_indices: for each keypoint the index of its mirror partner; None: no flip test.
        average_outputs: see :func:`flip_test`.

    Returns:
        (N, K, 3): (x, y) in crop pixels and the branch's score.
    """
    if flip_indices is None:
        outputs = branch(crops)
    else:
        outputs = flip_test(branch, crops, flip_indices, average_outputs)
    return branch.decode(outputs)
