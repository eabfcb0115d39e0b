"""Dataset registration (synthetic, COCO metadata) and the training person filter."""

import json
import os

import numpy as np
import pytest

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import depotr.data  # noqa: F401  (registers the datasets)
from depotr.config import add_depotr_config
from depotr.data.datasets import (
    SYNTHETIC_DATASET_NAMES,
    filter_person_annotations,
    register_synthetic_datasets,
    resolve_synthetic_root,
)
from depotr.data.keypoint_metadata import (
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_OKS_SIGMAS,
    keypoint_metadata_from_config,
)
from depotr.data.synthetic import GENERATOR_VERSION

K = len(COCO_PERSON_KEYPOINT_NAMES)


def test_import_registers_synthetic_datasets_lazily():
    for name in SYNTHETIC_DATASET_NAMES.values():
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco"
        assert meta.keypoint_names == list(COCO_PERSON_KEYPOINT_NAMES)
        assert not hasattr(meta, "keypoint_oks_sigmas")  # the config's keypoints carry them
        entry = f"{name.split('_')[-1]}-n{200 if name.endswith('val') else 2000}-s0-256px-v{GENERATOR_VERSION}"
        assert meta.json_file.endswith(os.path.join("synthetic_persons", entry, "annotations.json"))


def test_register_and_get(tmp_path, restore_synthetic_registration):
    register_synthetic_datasets(str(tmp_path / "synthetic_persons"), num_train=5, num_val=3, seed=11)
    meta = MetadataCatalog.get("synthetic_persons_val")
    assert not os.path.exists(meta.json_file)  # nothing generated before the first get
    dicts = DatasetCatalog.get("synthetic_persons_val")
    assert len(dicts) == 3 and os.path.isfile(meta.json_file)
    with open(meta.json_file) as f:
        raw = {a["id"]: a for a in json.load(f)["annotations"]}
    annos = [a for d in dicts for a in d["annotations"]]
    assert annos and all(a["category_id"] == 0 and len(a["keypoints"]) == 3 * K for a in annos)
    for anno in annos:  # load_coco_json adds 0.5 to every x, y (pixel index -> continuous)
        got = np.asarray(anno["keypoints"]).reshape(K, 3)
        src = np.asarray(raw[anno["id"]]["keypoints"]).reshape(K, 3)
        np.testing.assert_allclose(got[:, :2], src[:, :2] + 0.5)
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and d["height"] == d["width"] == 256
    assert len(DatasetCatalog.get("synthetic_persons_train")) == 5


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(seed=-1), "DATASETS.SYNTHETIC.SEED must be an integer >= 0, got -1"),
        (
            dict(num_train=-2),
            r"number of train images \(DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES\) must be an integer >= 0, got -2",
        ),
        (dict(image_size=0), "image size must be an integer >= 1, got 0"),
    ],
)
def test_bad_spec_is_an_error_naming_the_field_and_keeps_the_registration(tmp_path, kwargs, field):
    """A negative seed was registered and failed on the first get with NumPy's "expected
    non-negative integer"; now registration raises before the catalog changes."""
    before = MetadataCatalog.get("synthetic_persons_train").json_file
    spec = {**dict(root=str(tmp_path), num_train=2, num_val=2, seed=0), **kwargs}
    with pytest.raises(ValueError, match=field):
        register_synthetic_datasets(**spec)
    assert MetadataCatalog.get("synthetic_persons_train").json_file == before
    assert not os.listdir(tmp_path)


def test_reregistration_replaces_the_earlier_one(tmp_path, restore_synthetic_registration):
    register_synthetic_datasets(str(tmp_path / "a"), 2, 2, seed=0)
    register_synthetic_datasets(str(tmp_path / "b"), 2, 4, seed=0)
    assert len(DatasetCatalog.get("synthetic_persons_val")) == 4
    assert MetadataCatalog.get("synthetic_persons_val").json_file.startswith(str(tmp_path / "b"))


def test_generator_version_selects_the_data_and_every_version_is_registered(tmp_path, restore_synthetic_registration):
    root = tmp_path / "synthetic_persons"
    register_synthetic_datasets(str(root), 2, 2, seed=0, version=4)
    json_files = {
        name: MetadataCatalog.get(name).json_file
        for name in ("synthetic_persons_val", "synthetic_persons_v3_val", "synthetic_persons_v4_val")
    }
    assert json_files["synthetic_persons_val"] == json_files["synthetic_persons_v4_val"]
    assert json_files["synthetic_persons_v3_val"] == str(root / "val-n2-s0-256px-v3" / "annotations.json")
    assert json_files["synthetic_persons_v4_val"] == str(root / "val-n2-s0-256px-v4r2" / "annotations.json")
    assert len(DatasetCatalog.get("synthetic_persons_val")) == 2
    with open(json_files["synthetic_persons_val"]) as f:
        assert all("framing" in a["synthetic"] for a in json.load(f)["annotations"])  # v4's fields
    assert len(DatasetCatalog.get("synthetic_persons_v3_train")) == 2
    # The MPII files are made of the same version's persons (they were always version 3's).
    mpii_val = MetadataCatalog.get("synthetic_mpii_val")
    assert mpii_val.json_file == str(root / "mpii-r2-val-n2-s0-256px-v4r2" / "valid.json")
    assert mpii_val.image_root == str(root / "val-n2-s0-256px-v4r2" / "images")
    with pytest.raises(ValueError, match="generator version 5"):
        register_synthetic_datasets(str(root), 2, 2, seed=0, version=5)


@pytest.mark.parametrize("env, expected", [(None, "cwd"), ("custom", "env")], ids=["cwd_relative", "DEPOTR_DATASETS"])
def test_synthetic_root_resolution(tmp_path, monkeypatch, env, expected):
    monkeypatch.chdir(tmp_path)
    if env is None:
        monkeypatch.delenv("DEPOTR_DATASETS", raising=False)
        want = tmp_path / "datasets" / "synthetic_persons"
    else:
        monkeypatch.setenv("DEPOTR_DATASETS", str(tmp_path / env))
        want = tmp_path / env / "synthetic_persons"
    assert resolve_synthetic_root("datasets/synthetic_persons") == str(want)


@pytest.mark.parametrize("name", ["keypoints_coco_2017_train", "keypoints_coco_2017_val"])
def test_coco_keypoint_metadata(name):
    """Detectron2's builtin COCO keypoint metadata agrees with the keypoint table, which alone
    gives the sigmas."""
    meta = MetadataCatalog.get(name)
    assert list(meta.keypoint_names) == list(COCO_PERSON_KEYPOINT_NAMES)  # set by Detectron2
    assert len(meta.keypoint_flip_map) == 8
    assert not hasattr(meta, "keypoint_oks_sigmas")
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), (name,)
    keypoints = keypoint_metadata_from_config(cfg)  # checks the dataset's names and flip map
    assert keypoints.oks_sigmas == COCO_PERSON_OKS_SIGMAS


def _kps(v):
    out = []
    for i, vis in enumerate(v):
        out += [0.5, 0.5, 0] if vis == 0 else [10.0 + i, 20.0 + i, vis]
    return out


def _person(vis=2, crowd=0, with_keypoints=True):
    anno = {"bbox": [1, 2, 30, 40], "bbox_mode": 1, "category_id": 0, "iscrowd": crowd}
    if with_keypoints:
        anno["keypoints"] = _kps([vis] * K)
    return anno


@pytest.mark.parametrize(
    "annotations, expected",
    [
        ([_person()], dict(images_kept=1, persons_kept=1)),
        ([_person(crowd=1)], dict(images_dropped=1, persons_dropped_crowd=1)),
        ([_person(vis=0)], dict(images_dropped=1, persons_dropped_no_keypoints=1)),
        ([_person(with_keypoints=False)], dict(images_dropped=1, persons_dropped_no_keypoints=1)),
        (
            [_person(vis=1), _person(crowd=1), _person(vis=0)],
            dict(images_kept=1, persons_kept=1, persons_dropped_crowd=1, persons_dropped_no_keypoints=1),
        ),
        ([], dict(images_dropped=1)),
    ],
    ids=["kept", "crowd", "all_unlabelled", "no_keypoints_field", "mixed", "empty_image"],
)
def test_filter_person_annotations(annotations, expected):
    dicts = [{"file_name": "a.jpg", "image_id": 1, "annotations": annotations}]
    kept, stats = filter_person_annotations(dicts, return_stats=True)
    full = dict(
        images_kept=0, images_dropped=0, persons_kept=0, persons_dropped_crowd=0, persons_dropped_no_keypoints=0
    )
    full.update(expected)
    assert stats == full
    assert len(kept) == full["images_kept"]
    if kept:
        assert len(kept[0]["annotations"]) == full["persons_kept"]
    assert len(dicts[0]["annotations"]) == len(annotations)  # input untouched


def test_filter_logs_counts(caplog):
    dicts = [{"image_id": 1, "annotations": [_person(), _person(crowd=1)]}, {"image_id": 2, "annotations": []}]
    with caplog.at_level("INFO", logger="depotr.data.datasets"):
        assert len(filter_person_annotations(dicts)) == 1
    assert "kept 1 images, dropped 1" in caplog.text and "dropped 1 crowd" in caplog.text
