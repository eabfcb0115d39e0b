"""The person box sources (depotr.modeling.box_sources) and their one policy, rule by rule:
malformed boxes raise, boxes outside the image are dropped with one warning per image, ranked
sources apply the score threshold and keep the top-k sorted by score, gt keeps its order."""

import logging
import re
import time

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.structures import Boxes, BoxMode, Instances, Keypoints

from depotr.config import add_depotr_config
from depotr.modeling import box_sources
from depotr.modeling.box_sources import (
    GtBoxes,
    PersonBoxes,
    PrecomputedBoxes,
    WholeImageBoxes,
    build_box_source,
    check_boxes,
)
from depotr.modeling.meta_arch import TopDownPoseEstimator

H, W = 40, 60
K = 17


def _input(image_id, boxes=None, scores=None, gt=None, labelled=None):
    """A model input of H x W; ``boxes``/``scores``: proposals; ``gt``: gt boxes with ``labelled``
    keypoints per person."""
    x = {"image": torch.zeros((3, H, W), dtype=torch.uint8), "image_id": image_id, "height": H, "width": W}
    if boxes is not None:
        proposals = Instances((H, W))
        proposals.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        proposals.scores = torch.tensor(scores, dtype=torch.float32)
        x["proposals"] = proposals
    if gt is not None:
        instances = Instances((H, W))
        instances.gt_boxes = Boxes(torch.tensor(gt, dtype=torch.float32).reshape(-1, 4))
        kpts = torch.zeros((len(gt), K, 3))
        for i, n in enumerate(labelled or [K] * len(gt)):
            kpts[i, :n, 2] = 2
        instances.gt_keypoints = Keypoints(kpts)
        x["instances"] = instances
    return x


INSIDE = [[1.0, 2.0, 11.0, 22.0], [20.0, 5.0, 30.0, 35.0], [40.0, 10.0, 50.0, 30.0]]


def _sources(found):
    """Every source giving the boxes ``found`` = (boxes, scores) for image "img"."""
    boxes, scores = found
    return {
        "gt": (GtBoxes(), _input("img", gt=boxes)),
        "precomputed": (PrecomputedBoxes(), _input("img", boxes=boxes, scores=scores)),
    }


# ---------------------------------------------------------------------------------------------
# Rule 1: malformed boxes raise


@pytest.mark.parametrize(
    "bad_box",
    [[5.0, 5.0, 5.0, 20.0], [5.0, 20.0, 10.0, 10.0], [float("nan"), 0.0, 10.0, 10.0], [0.0, 0.0, float("inf"), 10.0]],
    ids=["zero-width", "negative-height", "nan", "inf"],
)
def test_check_boxes_names_image_and_index(bad_box):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], bad_box])
    with pytest.raises(ValueError, match=r"gt person box 1 of image 'img42'"):
        check_boxes(boxes, "gt", "img42")
    check_boxes(boxes[:1], "gt", "img42")  # valid boxes pass


def test_check_boxes_in_xywh_shows_the_box_as_given():
    # A width of 0 in XYWH (x1 = x0 in XYXY) and a box that is valid only as XYWH (x1 < x0).
    boxes = torch.tensor([[50.0, 5.0, 30.0, 60.0], [10.0, 20.0, 0.0, 80.0]])
    with pytest.raises(ValueError) as error:
        check_boxes(boxes, "precomputed", 3, torch.ones(2), BoxMode.XYWH_ABS)
    assert str(error.value) == (
        "precomputed person box 1 of image 3 is degenerate: [10.0, 20.0, 0.0, 80.0] (XYWH; width and height must "
        "be finite and > 0); 1 of 2 boxes of this image are degenerate"
    )
    check_boxes(boxes[:1], "precomputed", 3, box_mode=BoxMode.XYWH_ABS)
    with pytest.raises(ValueError, match=r"box 0 .*: \[50.0, 5.0, 30.0, 60.0\] \(XYXY; .*pass box_mode=BoxMode.XYWH"):
        check_boxes(boxes[:1], "precomputed", 3)


@pytest.mark.parametrize("source", ["gt", "precomputed"])
def test_malformed_box_raises_naming_image_source_and_index(source):
    # Box 2 is inverted; it also scores lowest, so the check must come before the filter.
    boxes, scores = INSIDE[:2] + [[30.0, 10.0, 20.0, 30.0]], [0.9, 0.8, 0.1]
    box_source, x = _sources((boxes, scores))[source]
    box_source.score_thresh = None if source == "gt" else 0.5
    with pytest.raises(ValueError, match=rf"^{source} person box 2 of image 'img' is degenerate: \[30.0, 10.0, 20.0"):
        box_source([x])


def test_malformed_shapes_and_scores_raise():
    with pytest.raises(
        ValueError, match=re.escape("detector person boxes of image 'a' must be (N, 4) XYXY, got shape (2, 5)")
    ):
        check_boxes(torch.zeros((2, 5)), "detector", "a")
    with pytest.raises(
        ValueError, match=re.escape("image 'a': box scores must be (2,) for 2 boxes, got shape (3,) (detector boxes)")
    ):
        check_boxes(torch.tensor(INSIDE[:2]), "detector", "a", torch.ones(3))
    with pytest.raises(ValueError, match=r"image 'a': box scores must be finite; box 1 has score inf \(precomputed"):
        PrecomputedBoxes()([_input("a", boxes=INSIDE[:2], scores=[0.5, float("inf")])])


# ---------------------------------------------------------------------------------------------
# Rule 3: clipped to the image; boxes with no area inside are dropped with one warning per image


@pytest.mark.parametrize("source", ["gt", "precomputed"])
def test_boxes_outside_the_image_are_dropped_with_one_warning_giving_count_and_indices(source, caplog):
    # 0: crosses the left border; 1 and 3: wholly outside (right of, below the image); 2: inside.
    boxes = [[-5.0, 2.0, 10.0, 20.0], [70.0, 0.0, 80.0, 10.0], INSIDE[1], [5.0, 40.0, 15.0, 50.0]]
    box_source, x = _sources((boxes, [0.9, 0.8, 0.7, 0.6]))[source]
    with caplog.at_level(logging.WARNING, logger="depotr.modeling.box_sources"):
        (found,) = box_source([x])
    assert found.index.tolist() == [0, 2]
    torch.testing.assert_close(found.boxes, torch.tensor([[0.0, 2.0, 10.0, 20.0], INSIDE[1]]))
    assert found.boxes.dtype == torch.float32 and found.index.dtype == torch.int64
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"Image 'img': dropped {source} person boxes [[70.0, 0.0, 80.0, 10.0], [5.0, 40.0, 15.0, 50.0]] "
        f"(indices [1, 3]), 2 of 4, which lie outside the image (H x W {H} x {W})"
    ]


def test_training_gt_boxes_are_not_clipped_but_outside_ones_still_dropped(caplog):
    gt = [[-5.0, 2.0, 10.0, 20.0], [70.0, 0.0, 80.0, 10.0], INSIDE[1], INSIDE[2]]
    source = GtBoxes(min_keypoints=3, clip=False)
    with caplog.at_level(logging.WARNING, logger="depotr.modeling.box_sources"):
        (found,) = source([_input("t", gt=gt, labelled=[3, 17, 2, 5])])
    # Person 2 has 2 labelled keypoints (< 3): left out before the check; person 1 lies outside.
    assert found.index.tolist() == [0, 3]
    torch.testing.assert_close(found.boxes, torch.tensor([gt[0], gt[3]]))  # not clipped
    assert "(indices [1]), 1 of 3" in caplog.text


# ---------------------------------------------------------------------------------------------
# Rule 2: ranked sources threshold, sort and keep the top-k; gt keeps its order


@pytest.mark.parametrize(
    "thresh,topk,expected,dropped",
    [
        (0.0, 100, [3, 1, 0, 2], {}),
        (0.5, 100, [3, 1, 0], {"score": 1, "topk": 0}),
        (0.0, 2, [3, 1], {"score": 0, "topk": 2}),
        (0.5, 0, [3, 1, 0], {"score": 1, "topk": 0}),
        (0.95, 5, [], {"score": 4, "topk": 0}),
    ],
    ids=["all", "thresh", "topk", "no-limit", "none"],
)
@pytest.mark.parametrize("source", ["precomputed"])
def test_ranked_sources_threshold_sort_and_topk(source, thresh, topk, expected, dropped):
    boxes = INSIDE + [[2.0, 3.0, 8.0, 9.0]]
    scores = [0.5, 0.7, 0.2, 0.9]
    box_source, x = _sources((boxes, scores))[source]
    box_source.score_thresh, box_source.topk = thresh, topk
    (found,) = box_source([x])
    assert found.index.tolist() == expected
    torch.testing.assert_close(found.boxes, torch.tensor(boxes).reshape(-1, 4)[expected])
    torch.testing.assert_close(found.scores, torch.tensor(scores)[expected])
    assert dict(box_source.num_dropped) == dropped


def test_topk_drops_are_a_warning_naming_box_topk_and_the_count(caplog, monkeypatch):
    # 150 caller boxes with BOX_TOPK 100 must not lose 50 persons silently.
    boxes = [[1.0, 1.0, 5.0 + i % 40, 9.0] for i in range(150)]
    scores = [0.5 + i / 1000 for i in range(150)]
    source = PrecomputedBoxes(0.0, 100)
    with caplog.at_level(logging.WARNING, logger="depotr.modeling.box_sources"):
        (found,) = source([_input("a", boxes=boxes, scores=scores)])
        (again,) = source([_input("b", boxes=boxes, scores=scores)])  # within the minute: not repeated
    assert len(found.boxes) == len(again.boxes) == 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Image 'a': MODEL.DEPOTR.BOX_TOPK 100 dropped 50 of its 150 precomputed person boxes" in warnings[0]
    # A minute later it warns again, with the total so far.
    clock = time.monotonic() + 61
    monkeypatch.setattr(box_sources.time, "monotonic", lambda: clock)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="depotr.modeling.box_sources"):
        source([_input("c", boxes=boxes, scores=scores)])
    assert "Image 'c': MODEL.DEPOTR.BOX_TOPK 100 dropped 50 of its 150" in caplog.text
    assert "150 dropped by the top-k so far" in caplog.text
    # Score-threshold drops alone are no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="depotr.modeling.box_sources"):
        PrecomputedBoxes(0.6, 100)([_input("d", boxes=boxes, scores=scores)])
    assert not caplog.records


def test_equal_scores_keep_their_order_and_gt_is_never_sorted():
    boxes = INSIDE
    (found,) = PrecomputedBoxes()([_input("a", boxes=boxes, scores=[0.5, 0.9, 0.5])])
    assert found.index.tolist() == [1, 0, 2]  # stable
    (found,) = GtBoxes()([_input("a", gt=boxes)])
    assert found.index.tolist() == [0, 1, 2] and found.scores.tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------
# The sources


def test_whole_image_source():
    (found,) = WholeImageBoxes()([_input("w")])
    assert found == PersonBoxes(found.boxes, found.scores, found.index)
    torch.testing.assert_close(found.boxes, torch.tensor([[0.0, 0.0, float(W), float(H)]]))
    assert found.scores.tolist() == [1.0] and found.index.tolist() == [0]


def test_precomputed_fallback_only_for_inputs_without_proposals():
    calls = []

    class CountingWholeImage(WholeImageBoxes):
        def __call__(self, batched_inputs):
            calls.append([x["image_id"] for x in batched_inputs])
            return super().__call__(batched_inputs)

    source = PrecomputedBoxes(topk=1, fallback=CountingWholeImage())
    given, found = source([_input("a", boxes=INSIDE[:2], scores=[0.2, 0.6]), _input("b")])
    assert calls == [["b"]]  # the fallback runs on the image without proposals only
    assert given.index.tolist() == [1] and found.index.tolist() == [0]
    torch.testing.assert_close(found.boxes, torch.tensor([[0.0, 0.0, float(W), float(H)]]))
    with pytest.raises(KeyError, match=r"image 'c' has no 'proposals'"):
        PrecomputedBoxes()([_input("c")])


def test_build_box_source_names():
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEPOTR.BOX_SCORE_THRESH, cfg.MODEL.DEPOTR.BOX_TOPK = 0.3, 7
    assert isinstance(build_box_source(cfg, "gt"), GtBoxes)
    assert isinstance(build_box_source(cfg, "whole_image"), WholeImageBoxes)
    precomputed = build_box_source(cfg, "precomputed")
    assert isinstance(precomputed, PrecomputedBoxes) and (precomputed.score_thresh, precomputed.topk) == (0.3, 7)
    # The detector runs beside the pose model, whose source reads its boxes from "proposals".
    detector = build_box_source(cfg, "detector")
    assert isinstance(detector, PrecomputedBoxes) and (detector.score_thresh, detector.topk) == (0.3, 7)
    with pytest.raises(ValueError, match=r"unknown person box source 'proposals'"):
        build_box_source(cfg, "proposals")
    whole = WholeImageBoxes()
    with_fallback = build_box_source(cfg, "precomputed", fallback=whole)
    assert with_fallback.fallback is whole and (with_fallback.score_thresh, with_fallback.topk) == (0.3, 7)
    with pytest.raises(ValueError, match="only the 'precomputed' box source takes a fallback, not 'gt'"):
        build_box_source(cfg, "gt", fallback=whole)


def test_box_source_keys_have_one_meaning_each():
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEPOTR.BOX_SOURCE = "precomputed"  # an inference source as the training one
    with pytest.raises(
        ValueError, match=r"BOX_SOURCE \(the training boxes\) must be one of \('gt',\).*TEST_BOX_SOURCE"
    ):
        TopDownPoseEstimator.from_config(cfg)
