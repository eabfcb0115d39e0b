"""OKS-NMS: the pairwise OKS against a loop over the COCO formula, the greedy suppression on
hand-made poses, and its use in TopDownPoseEstimator inference."""

import math

import pytest
import torch

from depotr.data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS
from depotr.modeling.oks_nms import oks_nms, pairwise_oks

from .test_meta_arch import make_input, make_model

K = len(COCO_PERSON_OKS_SIGMAS)


def _oks_loop(a, b, area_a, area_b, sigmas):
    """OKS of two poses written out per keypoint (independent of the vectorised code)."""
    scale = (area_a + area_b) / 2
    total = 0.0
    for (xa, ya), (xb, yb), sigma in zip(a, b, sigmas):
        d2 = (xa - xb) ** 2 + (ya - yb) ** 2
        total += math.exp(-d2 / (2 * scale * (2 * sigma) ** 2))
    return total / len(sigmas)


def test_pairwise_oks_matches_the_coco_formula():
    g = torch.Generator().manual_seed(0)
    keypoints = torch.rand(5, K, 3, generator=g, dtype=torch.float64) * 40
    areas = torch.rand(5, generator=g, dtype=torch.float64) * 900 + 100
    oks = pairwise_oks(keypoints, areas, COCO_PERSON_OKS_SIGMAS)
    for i in range(5):
        for j in range(5):
            expected = _oks_loop(
                keypoints[i, :, :2].tolist(),
                keypoints[j, :, :2].tolist(),
                areas[i].item(),
                areas[j].item(),
                COCO_PERSON_OKS_SIGMAS,
            )
            assert oks[i, j].item() == pytest.approx(expected, rel=1e-12)
    torch.testing.assert_close(oks.diagonal(), torch.ones(5, dtype=torch.float64))


def _poses():
    """Poses 0 and 2 are near-duplicates (OKS ~0.98), pose 1 is far from both."""
    base = torch.rand(K, 2, generator=torch.Generator().manual_seed(1)) * 50
    poses = torch.stack([base, base + 100.0, base + 0.5])
    return poses, torch.full((3,), 2500.0)


@pytest.mark.parametrize("scores, expected", [([0.9, 0.5, 0.8], [0, 1]), ([0.7, 0.5, 0.8], [2, 1])])
def test_oks_nms_keeps_the_best_of_duplicates(scores, expected):
    poses, areas = _poses()
    keep = oks_nms(poses, torch.tensor(scores), areas, COCO_PERSON_OKS_SIGMAS, 0.9)
    assert keep.tolist() == expected


def test_oks_nms_threshold_one_keeps_all_and_empty_input():
    poses, areas = _poses()
    keep = oks_nms(poses, torch.tensor([0.1, 0.3, 0.2]), areas, COCO_PERSON_OKS_SIGMAS, 1.0)
    assert keep.tolist() == [1, 2, 0]
    assert oks_nms(torch.zeros(0, K, 3), torch.zeros(0), torch.zeros(0), COCO_PERSON_OKS_SIGMAS, 0.9).tolist() == []


def test_oks_nms_bad_arguments():
    poses, areas = _poses()
    with pytest.raises(ValueError, match="threshold"):
        oks_nms(poses, torch.ones(3), areas, COCO_PERSON_OKS_SIGMAS, 1.5)
    with pytest.raises(ValueError, match=r"keypoints must be \(N, 17"):
        pairwise_oks(poses[:, :5], areas, COCO_PERSON_OKS_SIGMAS)
    with pytest.raises(ValueError, match="areas"):
        pairwise_oks(poses, areas[:2], COCO_PERSON_OKS_SIGMAS)


@pytest.mark.parametrize("thresh, expected", [(0.9, 2), (1.0, 3)])
def test_inference_suppresses_duplicate_person_boxes(thresh, expected):
    # The test double predicts every keypoint at its box centre: two copies of one box give
    # identical poses (OKS 1), the third box another pose.
    x = make_input("img", 2, torch.Generator().manual_seed(0), size=(48, 64))
    boxes = x["proposals"].proposal_boxes.tensor
    x["proposals"].proposal_boxes.tensor = torch.cat([boxes, boxes[:1]])
    x["proposals"].scores = torch.tensor([0.9, 0.8, 0.7])
    with torch.no_grad():
        inst = make_model(oks_nms_thresh=thresh).eval()([x])[0]["instances"]
    assert len(inst) == expected
    assert inst.pred_boxes.tensor[0].tolist() == boxes[0].tolist()
