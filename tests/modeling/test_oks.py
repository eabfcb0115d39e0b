"""The one COCO OKS function (depotr.modeling.oks.keypoint_similarity) against hand
computations for both scale rules and against pycocotools' COCOeval.computeOks."""

import math

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from depotr.data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS
from depotr.modeling.oks import keypoint_similarity

# Two keypoints with sigma 0.25, so (2 sigma)^2 = 0.25: pred is 0 and 5 px (3-4-5) from target.
SIGMAS = (0.25, 0.25)
PRED = torch.tensor([[10.0, 20.0], [3.0, 4.0]], dtype=torch.float64)
TARGET = torch.tensor([[10.0, 20.0], [0.0, 0.0]], dtype=torch.float64)


def test_target_rule_by_hand():
    # s^2 = target area 50: exponent 25 / (2 * 50 * 0.25) = 1.
    ks = keypoint_similarity(PRED, TARGET, torch.tensor(50.0), SIGMAS, "target", pred_areas=torch.tensor(1e6))
    assert ks.tolist() == pytest.approx([1.0, math.exp(-1.0)], rel=1e-12)


def test_mean_rule_by_hand():
    # s^2 = (30 + 70) / 2 = 50 -> exp(-1); with the target rule s^2 = 70 -> exp(-25 / 35).
    areas = (torch.tensor(30.0), torch.tensor(70.0))
    mean = keypoint_similarity(PRED, TARGET, areas[1], SIGMAS, "mean", pred_areas=areas[0])
    assert mean.tolist() == pytest.approx([1.0, math.exp(-1.0)], rel=1e-12)
    target = keypoint_similarity(PRED, TARGET, areas[1], SIGMAS, "target")
    assert target.tolist() == pytest.approx([1.0, math.exp(-5 / 7)], rel=1e-12)


def test_broadcasts_over_batch_shapes():
    # (2, 1, K, 2) against (1, 3, K, 2) with (1, 3) target areas -> (2, 3, K).
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 1, 17, 2, generator=g) * 50, torch.rand(1, 3, 17, 2, generator=g) * 50
    areas = torch.rand(1, 3, generator=g) * 900 + 100
    ks = keypoint_similarity(pred, target, areas, COCO_PERSON_OKS_SIGMAS)
    assert ks.shape == (2, 3, 17)
    one = keypoint_similarity(pred[1, 0], target[0, 2], areas[0, 2], COCO_PERSON_OKS_SIGMAS)
    torch.testing.assert_close(ks[1, 2], one)


def test_target_rule_equals_pycocotools():
    """OKS = mean of ks over the labelled keypoints, as COCOeval.computeOks (gt area as scale)."""
    rng = np.random.default_rng(0)
    gt_xy, dt_xy = rng.uniform(0, 100, (17, 2)), rng.uniform(0, 100, (17, 2))
    gt_xy = np.where(rng.random((17, 1)) < 0.3, dt_xy + rng.normal(0, 3, (17, 2)), gt_xy)  # some near
    visible = rng.random(17) < 0.8
    area = 3500.0
    coco_eval = COCOeval(iouType="keypoints")
    coco_eval._gts[1, 1] = [
        {"keypoints": np.column_stack([gt_xy, 2 * visible]).ravel().tolist(), "bbox": [0, 0, 100, 100], "area": area}
    ]
    coco_eval._dts[1, 1] = [{"keypoints": np.column_stack([dt_xy, np.ones(17)]).ravel().tolist(), "score": 1.0}]
    coco_eval.params.imgIds, coco_eval.params.catIds = [1], [1]
    expected = coco_eval.computeOks(1, 1)[0, 0]
    ks = keypoint_similarity(
        torch.from_numpy(dt_xy),
        torch.from_numpy(gt_xy),
        torch.tensor(area, dtype=torch.float64),
        COCO_PERSON_OKS_SIGMAS,
    )
    assert ks[torch.from_numpy(visible)].mean().item() == pytest.approx(expected, rel=1e-12)


def test_zero_area_is_finite():
    ks = keypoint_similarity(PRED, PRED, torch.tensor(0.0), SIGMAS)
    assert ks.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_rule": "box"}, "unknown OKS scale rule 'box'"),
        ({"scale_rule": "mean"}, "needs pred_areas"),
        ({"sigmas": (0.25,) * 3}, r"must be \(\.\.\., 3, 2\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"sigmas": SIGMAS, **kwargs}
    with pytest.raises(ValueError, match=message):
        keypoint_similarity(PRED, TARGET, torch.tensor(50.0), **args)
