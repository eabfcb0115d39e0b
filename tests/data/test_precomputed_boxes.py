"""Precomputed person detections: the loader (XYXY conversion, errors, what it drops) and the
"precomputed" box source's thresholds and top-K on what it loads."""

import json

import numpy as np
import pytest
import torch

from detectron2.structures import Boxes, Instances

from depotr.cli import ConfigError
from depotr.data.datasets import (
    attach_precomputed_boxes,
    attach_precomputed_boxes_from_cfg,
    load_precomputed_boxes,
    resolve_builtin_dataset_path,
)
from depotr.modeling.box_sources import PrecomputedBoxes, build_box_source

DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3},
    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.6},
    {"image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "score": 0.99},  # not a person
    {"image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 4], "score": 0.8},  # empty box
    {"image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 4], "score": 0.7},
    {"image_id": 99, "category_id": 1, "bbox": [5, 5, 10, 4], "score": 0.7},  # not in the dataset
]


def _write(tmp_path, obj, name="dets.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def _model_inputs(dicts):
    """What the data mapper makes of the dicts' person boxes (the "proposals"), on a 100 x 100 image."""
    inputs = []
    for d in dicts:
        proposals = Instances((100, 100))
        proposals.proposal_boxes = Boxes(torch.as_tensor(d["person_boxes"]))
        proposals.scores = torch.as_tensor(d["person_scores"])
        inputs.append(
            {"image": torch.zeros((3, 100, 100), dtype=torch.uint8), "image_id": d["image_id"], "proposals": proposals}
        )
    return inputs


@pytest.mark.parametrize(
    "thresh, topk, scores_1, scores_2, dropped",
    [
        (0.0, 100, [0.9, 0.6, 0.3], [0.7], dict()),
        (0.5, 100, [0.9, 0.6], [0.7], dict(score=1, topk=0)),
        (0.0, 1, [0.9], [0.7], dict(score=0, topk=2)),
        (0.95, 100, [], [], dict(score=4, topk=0)),
    ],
    ids=["all", "thresh_0.5", "top1", "thresh_above_all"],
)
def test_threshold_and_topk(tmp_path, thresh, topk, scores_1, scores_2, dropped):
    path = _write(tmp_path, DETECTIONS)
    boxes, stats = load_precomputed_boxes(path)
    assert stats["dropped_category"] == 1 and stats["dropped_empty"] == 1 and stats["kept"] == 5
    dicts = [{"image_id": 1, "file_name": "a"}, {"image_id": 2, "file_name": "b"}, {"image_id": 3, "file_name": "c"}]
    out = attach_precomputed_boxes(dicts, path)
    for d, count in zip(out, (3, 1, 0)):  # every person box of positive size, in the file's order
        assert d["person_boxes"].dtype == np.float32 and d["person_boxes"].shape == (count, 4)
        assert d["person_scores"].dtype == np.float32
    np.testing.assert_allclose(out[0]["person_scores"], [0.9, 0.3, 0.6], rtol=1e-6)
    assert "person_boxes" not in dicts[0]
    # The threshold and top-K are the box source's, once (by decreasing score).
    source = PrecomputedBoxes(thresh, topk)
    for found, want in zip(source(_model_inputs(out)), (scores_1, scores_2, [])):
        np.testing.assert_allclose(found.scores.numpy(), want, rtol=1e-6)
    assert dict(source.num_dropped) == dropped


def test_boxes_are_xyxy(tmp_path):
    out = attach_precomputed_boxes([{"image_id": 1}], _write(tmp_path, DETECTIONS[:1]))
    np.testing.assert_allclose(out[0]["person_boxes"], [[10, 20, 40, 60]])


def test_from_cfg_uses_the_test_dataset_position(tmp_path):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config

    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TEST = ("a", "b")
    cfg.DATASETS.PRECOMPUTED_BOXES = ("", _write(tmp_path, DETECTIONS))
    cfg.MODEL.DEPOTR.BOX_TOPK = 1
    dicts = [{"image_id": 1}]
    attached = attach_precomputed_boxes_from_cfg(cfg, "b", dicts)
    np.testing.assert_allclose(attached[0]["person_scores"], [0.9, 0.3, 0.6])
    (found,) = build_box_source(cfg, "precomputed")(_model_inputs(attached))
    np.testing.assert_allclose(found.scores.numpy(), [0.9])


def _cfg(test_box_source, files):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config

    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEPOTR.TEST_BOX_SOURCE = test_box_source
    cfg.DATASETS.TEST = ("a",)
    cfg.DATASETS.PRECOMPUTED_BOXES = files
    return cfg


def test_precomputed_boxes_without_a_file_is_an_error_unless_the_dicts_hold_boxes(tmp_path):
    """The friction: TEST_BOX_SOURCE "precomputed" (the default) with no detections file for a test
    dataset trained to the end, then failed at the evaluation with the box source's KeyError."""
    cfg = _cfg("precomputed", ("",))
    with pytest.raises(ConfigError, match="names no detections file for 'a' and its dicts hold no person_boxes"):
        attach_precomputed_boxes_from_cfg(cfg, "a", [{"image_id": 1}])
    with_boxes = [{"image_id": 1, "person_boxes": np.zeros((0, 4), np.float32)}]
    assert attach_precomputed_boxes_from_cfg(cfg, "a", with_boxes) == with_boxes
    assert attach_precomputed_boxes_from_cfg(_cfg("gt", ("",)), "a", [{"image_id": 1}]) == [{"image_id": 1}]


@pytest.mark.parametrize("source", ["gt", "detector", "whole_image"])
def test_from_cfg_reads_no_file_for_another_box_source(tmp_path, source):
    """The friction: --eval-only with TEST_BOX_SOURCE "gt" on a COCO config failed with "precomputed
    boxes file not found: datasets/coco/person_detection_results/..." (Base-DePOTR.yaml's file,
    which "gt" never uses)."""
    cfg = _cfg(source, (str(tmp_path / "missing.json"),))
    assert attach_precomputed_boxes_from_cfg(cfg, "a", [{"image_id": 1}]) == [{"image_id": 1}]


def test_from_cfg_reads_a_datasets_path_under_detectron2_datasets(tmp_path, monkeypatch):
    """The friction: with DETECTRON2_DATASETS=/data (README, "Training on COCO") the COCO configs'
    datasets/coco/person_detection_results/... file was looked for under the working directory."""
    (tmp_path / "data" / "coco").mkdir(parents=True)
    _write(tmp_path / "data" / "coco", DETECTIONS[:1])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no datasets/ folder here
    cfg = _cfg("precomputed", ("datasets/coco/dets.json",))
    attached = attach_precomputed_boxes_from_cfg(cfg, "a", [{"image_id": 1}])
    np.testing.assert_allclose(attached[0]["person_boxes"], [[10, 20, 40, 60]])


@pytest.mark.parametrize(
    "env, path, expected",
    [
        ("/data", "datasets/coco/dets.json", "/data/coco/dets.json"),
        ("/data", "./datasets/coco/dets.json", "/data/coco/dets.json"),
        (None, "datasets/coco/dets.json", "datasets/coco/dets.json"),
        ("/data", "/abs/datasets/dets.json", "/abs/datasets/dets.json"),
        ("/data", "boxes/dets.json", "boxes/dets.json"),
        ("/data", "datasets", "datasets"),
    ],
)
def test_resolve_builtin_dataset_path(monkeypatch, env, path, expected):
    if env is None:
        monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    else:
        monkeypatch.setenv("DETECTRON2_DATASETS", env)
    assert resolve_builtin_dataset_path(path) == expected


def test_an_empty_file_is_an_error(tmp_path):
    """The friction: an empty detections list evaluated with no box at all, its AP "nan" after the
    warning "No predictions from the model!"; docs/config.md calls a file with no box of the
    dataset's person category on its images an error."""
    path = _write(tmp_path, [])
    with pytest.raises(ConfigError, match=f"precomputed boxes file {path} holds no detections"):
        attach_precomputed_boxes([{"image_id": 1}], path)


def test_from_cfg_keeps_the_category_of_a_custom_dataset(tmp_path):
    """A custom keypoint dataset's json has its own category id (here 3): its detections are kept,
    COCO's person (1) dropped."""
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog

    from depotr.config import add_depotr_config
    from depotr.data.custom import unregister_dataset

    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TEST = ("kites_val_boxes",)
    detections = [{**d, "category_id": 3 if d["category_id"] == 1 else 1} for d in DETECTIONS]
    cfg.DATASETS.PRECOMPUTED_BOXES = (_write(tmp_path, detections),)
    MetadataCatalog.get("kites_val_boxes").set(thing_dataset_id_to_contiguous_id={3: 0})
    try:
        attached = attach_precomputed_boxes_from_cfg(cfg, "kites_val_boxes", [{"image_id": 1}])
    finally:
        unregister_dataset("kites_val_boxes")
    np.testing.assert_allclose(attached[0]["person_scores"], [0.9, 0.3, 0.6])


def _bad(**change):
    det = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    det.update(change)
    return [dict(DETECTIONS[0]), {k: v for k, v in det.items() if v is not None}]


@pytest.mark.parametrize(
    "content, match",
    [
        (_bad(score=None), r"detection 1: missing field 'score'"),
        (_bad(bbox=None), r"detection 1: missing field 'bbox'"),
        (_bad(image_id=None), r"detection 1: missing field 'image_id'"),
        (_bad(bbox=[1, 2, 3]), r"detection 1: field 'bbox' must be 4 finite numbers"),
        (_bad(bbox=[1, 2, "a", 4]), r"detection 1: field 'bbox' must be 4 finite numbers"),
        (_bad(bbox=[1, 2, -3, 4]), r"detection 1: degenerate box"),
        (_bad(bbox=[1, 2, 3, -0.5]), r"detection 1: degenerate box"),
        (_bad(score="high"), r"detection 1: field 'score'"),
        (_bad(image_id=1.7), r"detection 1: field 'image_id' must be an integer, got 1.7"),
        (_bad(image_id=True), r"detection 1: field 'image_id' must be an integer, got True"),
        (_bad(image_id="frame_0001"), r"detection 1: field 'image_id' must be an integer, got 'frame_0001'"),
        ({"image_id": 1}, r"expected a list of detections"),
    ],
    ids=[
        "no_score",
        "no_bbox",
        "no_image_id",
        "bbox_3_values",
        "bbox_not_number",
        "negative_width",
        "negative_height",
        "score_not_number",
        "image_id_fraction",
        "image_id_bool",
        "image_id_string",
        "not_a_list",
    ],
)
def test_malformed_file_errors_name_file_and_field(tmp_path, content, match):
    path = _write(tmp_path, content, "broken.json")
    with pytest.raises(ValueError, match=match) as info:
        load_precomputed_boxes(path)
    assert "broken.json" in str(info.value)


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(ConfigError, match="nope.json"):
        load_precomputed_boxes(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(ValueError, match="bad.json is not valid json"):
        load_precomputed_boxes(str(tmp_path / "bad.json"))


def test_logs_what_was_dropped(tmp_path, caplog):
    with caplog.at_level("INFO", logger="depotr.data.datasets"):
        attach_precomputed_boxes([{"image_id": 1}, {"image_id": 2}], _write(tmp_path, DETECTIONS))
    text = caplog.text
    assert "7 detections" in text and "kept 4;" in text and "1 of another category than 1" in text
    assert "1 empty" in text and "1 kept boxes belong to images not in the dataset" in text


@pytest.mark.parametrize(
    "change, counts",
    [
        (dict(image_id=1000), "0 of another category, 0 empty, 2 on image ids [1000]"),
        (dict(category_id=3), "2 of another category, 0 empty, 0 on image ids []"),
    ],
    ids=["other_images", "other_category"],
)
def test_a_file_with_no_box_of_the_dataset_is_an_error(tmp_path, change, counts):
    """A detections file of another dataset (image ids) or category would evaluate no person."""
    path = _write(tmp_path, [{**d, **change} for d in (DETECTIONS[0], DETECTIONS[5])])
    with pytest.raises(ValueError, match="none of its 2 detections is a box of category_id 1") as info:
        attach_precomputed_boxes([{"image_id": 1}, {"image_id": 2}], path)
    assert path in str(info.value) and counts in str(info.value)
