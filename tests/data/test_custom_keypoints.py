"""Your own keypoints (depotr.data.register_keypoint_dataset): a non-human skeleton the test draws
trains and evaluates end to end through train_net, K flowing everywhere; bad input is an error
naming the dataset and the field before training."""

import json
import math
import os
import re

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.common import DatasetFromList
from detectron2.structures import Boxes, Instances

import train_net
from depotr.cli import ConfigError
from depotr.config import load_depotr_config
from depotr.data import fill_keypoint_config, register_keypoint_dataset
from depotr.data.custom import DEFAULT_OKS_SIGMA, unregister_dataset
from depotr.data.dataset_mapper import DePOTRDatasetMapper
from depotr.data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS, keypoint_metadata_from_config
from depotr.engine.compat import map_dataset

from ..engine.conftest import INSTANT_CONFIG, instant_args

# train_net.setup re-registers the synthetic datasets under the test's root: restore the defaults.
pytestmark = pytest.mark.usefixtures("restore_synthetic_registration")

# A kite: K = 5, one left/right pair, three unpaired points (tip, centre, tail).
KITE = ["tip", "left_wing", "right_wing", "centre", "tail"]
KITE_FLIP = [("left_wing", "right_wing")]
KITE_SKELETON = [("tip", "left_wing"), ("tip", "right_wing"), ("left_wing", "tail"), ("right_wing", "tail"),
                 ("centre", "tail", (0, 0, 255))]  # fmt: skip
# A tripod seen from above: K = 3, no pairs.
TRIPOD = ["foot_a", "foot_b", "foot_c"]
CATEGORY_ID = 7  # not COCO's person id: the evaluator must map it back


def _kite_keypoints(rng, size):
    """(5, 2) kite points in a size x size image, and its box [x, y, w, h]."""
    cx, cy, s = rng.uniform(0.35, 0.65) * size, rng.uniform(0.35, 0.65) * size, rng.uniform(0.2, 0.3) * size
    a = rng.uniform(-0.3, 0.3)
    local = np.array([[0, -1.0], [-0.6, -0.2], [0.6, -0.2], [0, 0.0], [0, 1.0]]) * s
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = local @ rot.T + [cx, cy]
    x0, y0 = pts.min(0) - 2
    x1, y1 = pts.max(0) + 2
    return pts, [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def write_keypoint_dataset(folder, num_images, names, seed, keypoints_per_annotation=None):
    """A COCO keypoint file of drawn objects (one per image) with ``names``' K keypoints."""
    rng = np.random.default_rng(seed)
    size, k = 64, len(names)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pts, box = _kite_keypoints(rng, size)
        pts = pts[:k] if k <= 5 else np.concatenate([pts] * 2)[:k]
        image = np.full((size, size, 3), 40, np.uint8)
        cv2.fillPoly(image, [pts[:, None, :].astype(np.int32)], (200, 180, 60))
        for j, p in enumerate(pts):
            cv2.circle(image, tuple(int(v) for v in p), 2, (40 * j % 255, 255 - 40 * j, 120), -1)
        cv2.imwrite(os.path.join(folder, "images", f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": size, "width": size})
        kps = np.concatenate([pts, np.full((k, 1), 2.0)], axis=1).ravel().tolist()
        if keypoints_per_annotation is not None:
            kps = kps[: 3 * keypoints_per_annotation] + [0.0] * max(0, 3 * keypoints_per_annotation - len(kps))
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": CATEGORY_ID, "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0, "keypoints": kps, "num_keypoints": k})  # fmt: skip
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": CATEGORY_ID, "name": "thing", "keypoints": list(names)}]}  # fmt: skip
    json_file = os.path.join(folder, "annotations.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    return json_file, os.path.join(folder, "images")


@pytest.fixture
def registered(tmp_path):
    """Registers <name>_train / <name>_val of a generated skeleton; removes them afterwards."""
    names = []

    def register(name, keypoint_names, flip_map, **kwargs):
        for split, n, seed in (("train", 8, 0), ("val", 3, 1)):
            json_file, image_root = write_keypoint_dataset(tmp_path / f"{name}_{split}", n, keypoint_names, seed)
            register_keypoint_dataset(f"{name}_{split}", json_file, image_root, keypoint_names, flip_map, **kwargs)
            names.append(f"{name}_{split}")
        return f"{name}_train", f"{name}_val"

    yield register
    for name in names:
        unregister_dataset(name)


def _train_and_evaluate(tmp_path, train, val):
    """train_net.main on the instant model for 4 iterations; returns (the evaluation row of
    metrics.json, the written config)."""
    args = instant_args(
        str(tmp_path / "run"), str(tmp_path / "synthetic"),
        "DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)",
        "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "4",
        "INPUT.CROP_AUG.HALF_BODY_PROB", "0.0",  # the kite has no body halves (docs/datasets.md)
    )  # fmt: skip
    train_net.main(args)
    cfg = load_depotr_config(str(tmp_path / "run" / "config.yaml"))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.json").read_text().splitlines()]
    return [m for m in metrics if "keypoints/AP" in m][-1], cfg


@pytest.mark.slow
def test_a_kite_skeleton_trains_and_evaluates_end_to_end(tmp_path, registered):
    sigmas = [0.03, 0.05, 0.05, 0.07, 0.09]
    train, val = registered("kite", KITE, KITE_FLIP, skeleton=KITE_SKELETON, oks_sigmas=sigmas)
    results, cfg = _train_and_evaluate(tmp_path, train, val)
    # The written config has the dataset's keypoints (so demo, export and eval-only reuse them).
    assert cfg.MODEL.DEPOTR.NUM_KEYPOINTS == 5 and list(cfg.MODEL.DEPOTR.KEYPOINT_NAMES) == KITE
    assert list(cfg.TEST.KEYPOINT_OKS_SIGMAS) == sigmas
    assert keypoint_metadata_from_config(cfg).flip_indices == (0, 2, 1, 3, 4)
    assert 0.0 <= results["keypoints/AP"] <= 100.0
    predictions = json.loads((tmp_path / "run" / "inference" / val / "coco_instances_results.json").read_text())
    assert len(predictions) == 3 and all(len(p["keypoints"]) == 15 for p in predictions)
    assert {p["category_id"] for p in predictions} == {CATEGORY_ID}
    # The visualiser (Detectron2's, as tools/visualize_predictions.py uses it) draws the skeleton.
    from detectron2.utils.visualizer import Visualizer

    shown = Instances((64, 64))
    shown.pred_boxes = Boxes(torch.tensor([[5.0, 5.0, 50.0, 50.0]]))
    shown.pred_keypoints = torch.tensor([[[10.0, 10, 1], [20, 20, 1], [30, 10, 1], [25, 30, 1], [40, 45, 1]]])
    drawn = Visualizer(np.zeros((64, 64, 3), np.uint8), MetadataCatalog.get(val)).draw_instance_predictions(shown)
    assert (drawn.get_image() == (0, 0, 255)).all(axis=2).any()  # the centre-tail edge's colour


@pytest.mark.slow
def test_a_skeleton_without_flip_pairs_trains_with_the_default_sigma(tmp_path, registered):
    train, val = registered("tripod", TRIPOD, [])
    results, cfg = _train_and_evaluate(tmp_path, train, val)
    assert keypoint_metadata_from_config(cfg).flip_indices == (0, 1, 2)
    assert list(cfg.TEST.KEYPOINT_OKS_SIGMAS) == [DEFAULT_OKS_SIGMA] * 3
    assert DEFAULT_OKS_SIGMA == pytest.approx(sum(COCO_PERSON_OKS_SIGMAS) / 17)
    assert 0.0 <= results["keypoints/AP"] <= 100.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"keypoint_names": ["a", "b"], "flip_map": []}, "oks_sigmas has 5 values for 2 keypoint_names"),
        ({"flip_map": [("left_wing", "rudder")]}, r"flip_map: .*\['rudder'\]"),
        ({"flip_map": [("left_wing",)]}, "flip_map entries must be pairs"),
        ({"oks_sigmas": [0.05] * 4}, "oks_sigmas has 4 values for 5 keypoint_names"),
        ({"skeleton": [("tip", "nose")]}, "skeleton edges"),
        ({"keypoint_names": ["tip", "tip", "a", "b", "c"]}, "repeated"),
        ({"skeleton": [("tip", "left_wing", "red")]}, r"skeleton edge \['tip', 'left_wing'\]: colour .* got 'red'"),
        ({"skeleton": [("tip", "tail", (0, 0, 256))]}, r"skeleton edge \['tip', 'tail'\]: colour must be 3 ints 0-255"),
        ({"evaluator_type": "cocoo"}, r"evaluator_type must be one of \['coco', 'crowdpose', 'mpii_pckh'\]"),
        # Each below was a TypeError without the dataset's name, or registered wrongly without a word.
        ({"keypoint_names": "tip"}, r"keypoint_names must be a non-empty list of names, got 'tip'$"),  # 3 keypoints
        ({"flip_map": ("left_wing", "right_wing")}, r"flip_map must be a list of \(left, right\) name pairs"),
        ({"flip_map": None}, r"flip_map must be a list of \(left, right\) name pairs \(\[\] for none\), got None"),
        (
            {"skeleton": [[1, 2], [2, 5]]},
            r"got \[1, 2\] \(1-based indices as a COCO json's skeleton\? name them: \['tip', 'left_wing'\]\)",
        ),
        ({"skeleton": [[1, 9]]}, r"of keypoint_names \[.*\], got \[1, 9\]$"),
        ({"oks_sigmas": 0.05}, r"oks_sigmas must be 5 numbers \(or None\), got 0.05"),
        ({"oks_sigmas": ["0.05"] * 5}, r"oks_sigmas must be 5 numbers \(or None\), got \['0.05'"),
    ],
)
def test_bad_metadata_is_an_error_naming_the_dataset_and_the_field(tmp_path, kwargs, field):
    args = {"keypoint_names": KITE, "flip_map": KITE_FLIP, "oks_sigmas": [0.05] * 5, **kwargs}
    with pytest.raises(ValueError, match=field) as info:
        register_keypoint_dataset("bad_kite", str(tmp_path / "a.json"), str(tmp_path), **args)
    assert "'bad_kite'" in str(info.value)
    assert "bad_kite" not in DatasetCatalog.list()


def test_annotations_with_another_number_of_keypoints_fail_before_training(tmp_path):
    json_file, image_root = write_keypoint_dataset(tmp_path / "d", 2, KITE, 0, keypoints_per_annotation=4)
    register_keypoint_dataset("kite_four", json_file, image_root, KITE, KITE_FLIP)
    try:
        args = instant_args(str(tmp_path / "run"), str(tmp_path / "syn"), "DATASETS.TRAIN", "('kite_four',)",
                            "DATASETS.TEST", "('kite_four',)")  # fmt: skip
        with pytest.raises(ValueError, match=r"'kite_four'.*field 'keypoints' has 12 values, expected 3 x 5"):
            train_net.setup(args)  # materialises the datasets before any model is built
        assert not (tmp_path / "run" / "model_final.pth").exists()
    finally:
        unregister_dataset("kite_four")


def _load_kite(tmp_path, name, change):
    """DatasetCatalog.get (as train_net.setup makes it) of a 2-image kite file (under tmp_path / "d")
    edited by ``change(coco)`` and registered as ``name``; returns (its json path, the edited coco,
    the dataset dicts)."""
    json_file, image_root = write_keypoint_dataset(tmp_path / "d", 2, KITE, 0)
    with open(json_file) as f:
        coco = json.load(f)
    change(coco)
    with open(json_file, "w") as f:
        json.dump(coco, f)
    register_keypoint_dataset(name, json_file, image_root, KITE, KITE_FLIP)
    try:
        return json_file, coco, DatasetCatalog.get(name)
    finally:
        unregister_dataset(name)


def _load_changed(tmp_path, change):
    """:func:`_load_kite` of a file that fails to load; returns (its json path, the ValueError raised)."""
    with pytest.raises(ValueError) as info:
        _load_kite(tmp_path, "kite_bad", change)
    json_file = str(tmp_path / "d" / "annotations.json")
    assert str(info.value).startswith(f"keypoint dataset 'kite_bad' ({json_file}): ")
    return json_file, str(info.value)


def _crowd_without_area(coco):
    coco["annotations"][1].update(iscrowd=1)
    del coco["annotations"][1]["area"]


@pytest.mark.parametrize(
    "key, index, field",
    [("annotations", 1, "keypoints"), ("annotations", 1, "area"), ("annotations", 0, "num_keypoints"),
     ("annotations", 1, "bbox"), ("images", 0, "height"), ("images", 1, "file_name")],
)  # fmt: skip
def test_a_field_that_loading_or_evaluation_reads_is_required_at_load(tmp_path, key, index, field):
    _, error = _load_changed(tmp_path, lambda c: c[key][index].pop(field))
    assert f"{key}[{index}] (id {index + 1}) is missing field(s) ['{field}']" in error


def test_crowd_annotations_need_the_fields_too_and_the_json_its_lists(tmp_path):
    _, error = _load_changed(tmp_path, _crowd_without_area)  # pycocotools reads a crowd one's area too
    assert "annotations[1] (id 2) is missing field(s) ['area']" in error
    _, error = _load_changed(tmp_path, lambda c: c.pop("categories"))
    assert error.endswith("no top-level 'categories' list")


@pytest.mark.parametrize(
    "field, index, value, message",
    [
        ("bbox", 2, 0.0, r"degenerate box \[.*, 0\.0, .*\]"),
        ("bbox", 3, -5.0, r"degenerate box \[.*, -5\.0\]"),
        ("keypoints", 2, 3, r"visibility must be 0, 1 or 2, got \[2\.0, 3\.0\]"),
        ("keypoints", 0, float("nan"), "NaN or inf"),
        ("keypoints", 4, float("inf"), "NaN or inf"),
    ],
    ids=["zero-width", "negative-height", "visibility-3", "nan", "inf"],
)
def test_a_bad_box_or_keypoint_fails_at_load_naming_the_image_and_annotation(tmp_path, field, index, value, message):
    json_file, error = _load_changed(tmp_path, lambda c: c["annotations"][1][field].__setitem__(index, value))
    assert re.search(message, error), error
    assert f"annotation id 2 of {os.path.join(os.path.dirname(json_file), 'images', '1.png')}" in error


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("area", 0, r"field 'area' is 0, expected a positive number"),
        ("area", -3.5, r"field 'area' is -3.5, expected a positive number"),
        ("num_keypoints", 0, r"field 'num_keypoints' is 0 but 5 keypoints are labelled \(v > 0\)"),
    ],
    ids=["area-0", "area-negative", "num-keypoints-0"],
)
def test_an_area_or_num_keypoints_the_evaluation_misreads_fails_at_load(tmp_path, field, value, message):
    # pycocotools ignores a ground truth whose num_keypoints is 0 and divides OKS by the area: both
    # would change the AP without a word; a string num_keypoints crashed the evaluation after training.
    json_file, error = _load_changed(tmp_path, lambda c: c["annotations"][1].update({field: value}))
    assert re.search(message, error), error
    assert f"annotation 2 of {os.path.join(os.path.dirname(json_file), 'images', '1.png')}" in error


@pytest.mark.parametrize(
    "key, index, field, value, expected",
    [
        ("annotations", 1, "bbox", "1,2,3,4", "4 numbers [x, y, w, h]"),
        ("annotations", 1, "bbox", [1.0, 2.0, 3.0], "4 numbers [x, y, w, h]"),
        ("annotations", 1, "keypoints", "1 2 3", "a list of numbers"),
        ("annotations", 1, "keypoints", None, "a list of numbers"),
        ("annotations", 1, "keypoints", ["12.5"] + [2.0] * 14, "a list of numbers"),
        ("annotations", 1, "image_id", "2", "an integer"),
        ("annotations", 1, "id", 2.5, "an integer"),
        ("annotations", 1, "iscrowd", "0", "0 or 1"),
        ("annotations", 1, "num_keypoints", "5", "an integer >= 0"),
        ("annotations", 1, "area", "100", "a number"),
        ("images", 1, "height", "64", "a positive integer"),
        ("images", 1, "width", 0, "a positive integer"),
        ("images", 1, "file_name", 5, "a file name"),
        ("categories", 0, "name", None, "a name"),
    ],
    ids=["bbox-string", "bbox-3", "keypoints-string", "keypoints-null", "keypoint-string", "image-id-string",
         "id-float", "iscrowd-string", "num-keypoints-string", "area-string", "height-string", "width-0",
         "file-name-int", "category-name-null"],
)  # fmt: skip
def test_a_field_of_the_wrong_type_fails_at_load_naming_it(tmp_path, key, index, field, value, expected):
    # Each was a traceback from load_coco_json (AssertionError, TypeError, IndexError) or mid-training
    # (SizeMismatchError), or silently wrong: iscrowd "0" is truthy (the person dropped as a crowd
    # region), an annotation whose image_id is "2" matches no image and is dropped.
    _, error = _load_changed(tmp_path, lambda c: c[key][index].update({field: value}))
    entry_id = value if field == "id" else CATEGORY_ID if key == "categories" else index + 1
    assert f"{key}[{index}] (id {entry_id}): field '{field}' is {value!r}, expected {expected}" in error, error


def test_boolean_iscrowd_loads_as_its_number(tmp_path):
    # json booleans are what some tools write for iscrowd; pycocotools and load_coco_json read them as 0 / 1.
    def booleans(coco):
        coco["annotations"][0]["iscrowd"], coco["annotations"][1]["iscrowd"] = False, True

    _, coco, dicts = _load_kite(tmp_path, "kite_bool", booleans)
    crowd = {anno["id"]: anno["iscrowd"] for d in dicts for anno in d["annotations"]}
    assert crowd == {coco["annotations"][0]["id"]: False, coco["annotations"][1]["id"]: True}


def test_an_annotation_of_another_category_fails_at_load(tmp_path):
    # Detectron2's load_coco_json raised a KeyError naming neither the dataset nor the file.
    other = CATEGORY_ID + 1
    _, error = _load_changed(tmp_path, lambda c: c["annotations"][1].update(category_id=other))
    assert error.endswith(f"annotations[1] (id 2): category_id {other} is not the category's id {CATEGORY_ID}")


def test_missing_image_files_fail_at_load_naming_them(tmp_path):
    # A missing validation image was an OSError traceback at the evaluation, after the whole training.
    def remove_images(coco):
        for image in coco["images"]:
            os.remove(tmp_path / "d" / "images" / image["file_name"])

    json_file, error = _load_changed(tmp_path, remove_images)
    image_root = os.path.join(os.path.dirname(json_file), "images")
    assert error.endswith(f"2 of 2 image files do not exist under {image_root}: 0.png, 1.png")


def test_train_net_reports_a_bad_dataset_file_in_one_line(tmp_path, capsys):
    from depotr.cli import run_main

    json_file, image_root = write_keypoint_dataset(tmp_path / "d", 2, KITE, 0)
    coco = json.loads(open(json_file).read())
    coco["annotations"][0]["bbox"] = "1,2,3,4"
    with open(json_file, "w") as f:
        json.dump(coco, f)
    register_keypoint_dataset("kite_typo", json_file, image_root, KITE, KITE_FLIP)
    try:
        args = instant_args(str(tmp_path / "run"), str(tmp_path / "syn"), "DATASETS.TRAIN", "('kite_typo',)",
                            "DATASETS.TEST", "()", "INPUT.CROP_AUG.HALF_BODY_PROB", "0.0")  # fmt: skip
        argv = ["--config-file", args.config_file, *args.opts]
        assert run_main(train_net.cli, argv) == 2
    finally:
        unregister_dataset("kite_typo")
    # the one error line (Detectron2's collect_env may log torch's "No CUDA runtime" line before it)
    error = capsys.readouterr().err.strip().splitlines()
    assert [line for line in error if "No CUDA runtime is found" not in line] == [
        f"error: keypoint dataset 'kite_typo' ({json_file}): annotations[0] (id 1): field 'bbox' is "
        "'1,2,3,4', expected 4 numbers [x, y, w, h]"
    ]


def test_the_area_is_left_to_evaluations_that_read_it(tmp_path):
    json_file, image_root = write_keypoint_dataset(tmp_path / "d", 2, KITE, 0)
    coco = json.loads(open(json_file).read())
    coco["annotations"][1]["area"] = 0  # CrowdPose's evaluation (use_area=False) and PCKh never read it
    with open(json_file, "w") as f:
        json.dump(coco, f)
    register_keypoint_dataset("kite_crowd", json_file, image_root, KITE, KITE_FLIP, evaluator_type="crowdpose")
    try:
        assert len(DatasetCatalog.get("kite_crowd")) == 2
    finally:
        unregister_dataset("kite_crowd")


def test_num_keypoints_of_an_unlabelled_annotation_must_be_0(tmp_path):
    def unlabel(coco):
        coco["annotations"][0]["keypoints"] = [0.0] * 15  # num_keypoints stays 5

    _, error = _load_changed(tmp_path, unlabel)
    assert "annotation 1 of" in error and "field 'num_keypoints' is 5 but 0 keypoints are labelled" in error


def test_repeated_image_ids_fail_at_load(tmp_path):
    # load_coco_json kept one of the two images and gave it the annotations of both.
    _, error = _load_changed(tmp_path, lambda c: c["images"][1].update(id=1))
    assert error.endswith("image ids must be unique, repeated: 1")


@pytest.mark.parametrize(
    "listed", [["tip", "right_wing", "left_wing", "centre", "tail"], ["tip", "wing", "tail"]], ids=["order", "count"]
)
def test_the_category_keypoint_names_must_be_the_registered_ones(tmp_path, listed):
    _, error = _load_changed(tmp_path, lambda c: c["categories"][0].update(keypoints=listed))
    assert f"the category's keypoints {listed} are not the registered keypoint_names {KITE}" in error


def test_fill_keypoint_config_leaves_explicit_and_coco_configs_alone(tmp_path, registered):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config

    train, _ = registered("kite2", KITE, KITE_FLIP)
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TRAIN = ("keypoints_coco_2017_train",)  # Detectron2's builtin: not ours, untouched
    assert fill_keypoint_config(cfg) is None and cfg.MODEL.DEPOTR.NUM_KEYPOINTS == 17
    cfg.DATASETS.TRAIN = (train,)
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = list(KITE)  # set by the user: not replaced
    assert fill_keypoint_config(cfg) is None
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = []
    assert "NUM_KEYPOINTS 5" in fill_keypoint_config(cfg)
    assert [list(p) for p in cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP] == [["left_wing", "right_wing"]]


def test_drawing_metadata_follows_the_config_keypoints(registered):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config
    from depotr.data import coco_person_metadata, drawing_metadata

    _, val = registered("kite3", KITE, KITE_FLIP, skeleton=KITE_SKELETON)
    cfg = get_cfg()
    add_depotr_config(cfg)
    assert drawing_metadata(cfg) == coco_person_metadata()
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES, cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = list(KITE), [list(KITE_FLIP[0])]
    assert drawing_metadata(cfg)["keypoint_connection_rules"] == []  # no dataset of the config has them
    cfg.DATASETS.TEST = (val,)
    drawn = drawing_metadata(cfg)
    assert drawn["keypoint_names"] == KITE and drawn["keypoint_flip_map"] == KITE_FLIP
    assert drawn["keypoint_connection_rules"][-1] == ("centre", "tail", (0, 0, 255))


def test_half_body_on_a_non_human_skeleton_says_how_to_switch_it_off():
    from depotr.data.keypoint_metadata import upper_body_mask

    with pytest.raises(ValueError, match=r"\['tip', 'left_wing', 'right_wing', 'centre', 'tail'\].*HALF_BODY_PROB 0"):
        upper_body_mask(KITE)
    assert upper_body_mask(["head", "neck", "left_ankle"]) == [True, True, False]  # CrowdPose names have halves


def _half_body_cfg(names, flip_map, *opts):
    """The instant config (random weights, CPU, no datasets) for keypoints ``names``, half-body on."""
    return load_depotr_config(
        INSTANT_CONFIG,
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
         "MODEL.DEPOTR.NUM_KEYPOINTS", len(names), "MODEL.DEPOTR.KEYPOINT_NAMES", list(names),
         "MODEL.DEPOTR.KEYPOINT_FLIP_MAP", [list(pair) for pair in flip_map],
         "INPUT.CROP_AUG.HALF_BODY_PROB", 0.3, *opts],
    )  # fmt: skip


def test_a_kite_config_with_half_body_on_predicts_and_exports(tmp_path):
    """Half-body is a training augmentation: inference needs no body halves."""
    from depotr import Predictor
    from depotr.export import build_crop_keypoint_predictor

    cfg = _half_body_cfg(KITE, KITE_FLIP, "TEST.KEYPOINT_OKS_SIGMAS", [0.05] * 5)
    _, image_root = write_keypoint_dataset(tmp_path / "d", 1, KITE, 0)
    instances = Predictor(cfg, random_weights=True)(os.path.join(image_root, "0.png"))
    assert instances.pred_keypoints.shape == (1, 5, 3)
    assert build_crop_keypoint_predictor(cfg, random_weights=True) is not None


def test_training_with_half_body_on_a_kite_is_a_config_error(tmp_path, registered):
    """train_net stops before the first iteration, naming the key and the keypoints without a half."""
    train, val = registered("kite_halves", KITE, KITE_FLIP)
    args = instant_args(str(tmp_path / "run"), str(tmp_path / "synthetic"), "DATASETS.TRAIN", f"('{train}',)",
                        "DATASETS.TEST", f"('{val}',)", "INPUT.CROP_AUG.HALF_BODY_PROB", "0.3")  # fmt: skip
    with pytest.raises(ConfigError, match=rf"{re.escape(str(KITE))} have no body half.*HALF_BODY_PROB 0"):
        train_net.main(args)
    assert not (tmp_path / "run" / "model_final.pth").exists()


def test_eval_only_of_a_kite_config_with_half_body_on_evaluates(tmp_path, registered):
    """The friction: train_net --eval-only (and its checkpoint fit check) built the training model,
    whose half-body augmentation needs body halves: a ConfigError instead of the evaluation. --resume
    trains, so the fit check still refuses the config up front."""
    from depotr.engine import DePOTRCheckpointer
    from depotr.modeling.meta_arch import build_pose_model

    train, val = registered("kite_eval", KITE, KITE_FLIP)
    opts = ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)", "INPUT.CROP_AUG.HALF_BODY_PROB", "0.3"]
    cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", *opts])
    fill_keypoint_config(cfg)
    DePOTRCheckpointer(build_pose_model(cfg, training=False), str(tmp_path)).save("kite")
    opts += ["MODEL.WEIGHTS", str(tmp_path / "kite.pth")]
    output_dir, synthetic = str(tmp_path / "run"), str(tmp_path / "synthetic")
    # The first evaluation builds the model in main(); the second, in a folder whose config.yaml the
    # first wrote, first checks that the checkpoint fits that model.
    for _ in range(2):
        results = train_net.main(instant_args(output_dir, synthetic, *opts, extra=["--eval-only"]))
        assert 0.0 <= results["keypoints"]["AP"] <= 100.0
    with pytest.raises(ConfigError, match=rf"{re.escape(str(KITE))} have no body half.*HALF_BODY_PROB 0"):
        train_net.main(instant_args(output_dir, synthetic, *opts, extra=["--resume"]))


def test_half_body_training_needs_both_halves_of_a_custom_skeleton():
    from depotr.modeling.meta_arch import TopDownPoseEstimator

    # Table names (CrowdPose's) in the skeleton's own order: the split is theirs.
    names = ["left_ankle", "head", "right_ankle", "neck", "left_hip", "right_hip"]
    flip_map = [("left_ankle", "right_ankle"), ("left_hip", "right_hip")]
    half_body = TopDownPoseEstimator(_half_body_cfg(names, flip_map)).crop_augmentation.half_body
    assert half_body.upper_body == [False, True, False, True, False, False]
    with pytest.raises(ConfigError, match=r"HALF_BODY_PROB 0.3: .*none of the 3 is lower-body"):
        TopDownPoseEstimator(_half_body_cfg(["head", "neck", "nose"], []))


USER_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
import train_net
from depotr.cli import run_main
from depotr.data import register_keypoint_dataset

# At module level: every process train_net launches (spawned, --num-gpus 2) imports this file
# again and so has the datasets; registered under `if __name__ == "__main__"` they would be missing.
for split in ("train", "val"):
    register_keypoint_dataset(
        "user_kite_" + split,
        os.path.join({data!r}, split, "annotations.json"),
        os.path.join({data!r}, split, "images"),
        keypoint_names={names!r}, flip_map={flip!r},
    )

if __name__ == "__main__":
    sys.exit(run_main(train_net.cli))
"""


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_processes")
def test_a_users_script_registering_its_dataset_trains_on_two_processes(tmp_path):
    """docs/datasets.md's recipe: a script that registers the dataset at module level and calls
    run_main(train_net.cli) trains with --num-gpus 2 (two CPU processes) and evaluates."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for split, n, seed in (("train", 8, 0), ("val", 3, 1)):
        write_keypoint_dataset(tmp_path / "data" / split, n, KITE, seed)
    script = tmp_path / "train_kites.py"
    script.write_text(USER_SCRIPT.format(repo=repo, data=str(tmp_path / "data"), names=KITE, flip=KITE_FLIP))
    args = instant_args(str(tmp_path / "run"), str(tmp_path / "synthetic"))
    command = [sys.executable, str(script), "--config-file", args.config_file, "--num-gpus", "2"]
    command += ["OUTPUT_DIR", str(tmp_path / "run"), "DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic")]
    command += ["DATASETS.TRAIN", "('user_kite_train',)", "DATASETS.TEST", "('user_kite_val',)", "MODEL.DEVICE", "cpu"]
    command += ["SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "2"]
    command += ["INPUT.CROP_AUG.HALF_BODY_PROB", "0.0"]  # the kite has no body halves
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_depotr_config(str(tmp_path / "run" / "config.yaml"))
    assert list(cfg.MODEL.DEPOTR.KEYPOINT_NAMES) == KITE
    predictions = json.loads(
        (tmp_path / "run" / "inference" / "user_kite_val" / "coco_instances_results.json").read_text()
    )
    assert len(predictions) == 3 and all(len(p["keypoints"]) == 15 for p in predictions)


def test_an_image_of_another_size_than_its_entry_is_skipped_in_training_and_an_error_in_evaluation(tmp_path, caplog):
    # Detectron2's check_image_size stopped the training with a SizeMismatchError traceback when the
    # image was reached, and the evaluation the same way.
    _, _, dicts = _load_kite(tmp_path, "kite_size", lambda coco: coco["images"][0].update(width=80, height=48))
    bad, good = str(tmp_path / "d" / "images" / "0.png"), str(tmp_path / "d" / "images" / "1.png")  # 64 x 64
    problem = f"image {bad} is 64x64 (width x height) but its dataset entry says 80x48"

    train = DePOTRDatasetMapper(is_train=True, num_keypoints=len(KITE))
    with caplog.at_level("WARNING", logger="depotr.data.dataset_mapper"):
        assert train(dicts[0]) is None and train(dicts[0]) is None
    assert train.num_skipped_images == 2
    assert f"Skipping {problem}; 1 skipped so far" in caplog.text
    assert f"Skipping {problem}; 2 skipped so far" in caplog.text
    dataset = map_dataset(DatasetFromList(dicts, copy=False), train)
    assert [dataset[i]["file_name"] for i in range(2)] == [good, good]  # another element instead

    test = DePOTRDatasetMapper(is_train=False, num_keypoints=len(KITE))
    assert test(dicts[1])["image"].shape == (3, 64, 64)
    with pytest.raises(ConfigError) as info:
        test(dicts[0])
    assert str(info.value) == f"{problem}: correct the width/height in the dataset json"


@pytest.mark.parametrize(
    "opts, message",
    [
        (["DATASETS.TRAIN", "('dogs_train',)"], "DATASETS.TRAIN: dataset 'dogs_train' is not registered (your own"),
        (["DATASETS.TEST", "('synthetic_persons_vall',)"],
         "DATASETS.TEST: dataset 'synthetic_persons_vall' is not registered (did you mean 'synthetic_persons_val'?"),
    ],
    ids=["unregistered", "typo"],
)  # fmt: skip
def test_an_unregistered_dataset_is_one_error_line_before_the_run_starts(tmp_path, capsys, opts, message):
    # train_net.py --eval-only of a custom run's config.yaml without the registering script: a KeyError
    # traceback listing the 70 registered datasets, after OUTPUT_DIR was taken and config.yaml written.
    from depotr.cli import run_main

    args = instant_args(str(tmp_path / "run"), str(tmp_path / "syn"), *opts)
    assert (
        run_main(train_net.cli, ["--config-file", args.config_file, "--eval-only", "--random-weights", *args.opts]) == 2
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {message}"), error
    assert "register_keypoint_dataset" in error[0] and "docs/datasets.md" in error[0]
    assert not (tmp_path / "run").exists()


DOG = ["nose", "L_Eye", "R_Eye", "neck", "L_F_Paw", "R_F_Paw", "LeftTail", "RightTail", "ear.l", "ear.r", "r1"]


@pytest.mark.parametrize(
    "flip_map, unpaired",
    [
        ([], [["L_Eye", "R_Eye"], ["L_F_Paw", "R_F_Paw"], ["LeftTail", "RightTail"], ["ear.l", "ear.r"]]),
        ([("L_Eye", "R_F_Paw"), ("LeftTail", "RightTail"), ("ear.l", "ear.r")],
         [["L_Eye", "R_Eye"], ["L_F_Paw", "R_F_Paw"]]),
        ([("L_Eye", "R_Eye"), ("L_F_Paw", "R_F_Paw"), ("LeftTail", "RightTail"), ("ear.r", "ear.l")], None),
    ],
    ids=["none-paired", "mispaired", "all-paired"],
)  # fmt: skip
def test_left_right_names_missing_from_the_flip_map_are_warned_about(tmp_path, caplog, flip_map, unpaired):
    # AP-10K-style names (L_Eye / R_Eye) registered with flip_map=[] trained without a word: every
    # flipped crop taught the model the right eye where the left one is, and the flip test averaged them.
    with caplog.at_level("WARNING", logger="depotr.data.custom"):
        register_keypoint_dataset("dogs_lr", str(tmp_path / "a.json"), str(tmp_path), DOG, flip_map)
    unregister_dataset("dogs_lr")
    warned = [r.getMessage() for r in caplog.records if "left/right mirrors" in r.getMessage()]
    if unpaired is None:
        assert warned == []
    else:
        assert warned == [
            f"keypoint dataset 'dogs_lr': keypoints {unpaired} are named as left/right mirrors but flip_map does not "
            "pair them: a horizontal flip (INPUT.CROP_AUG.FLIP_PROB, TEST.FLIP) keeps each on the other's point; "
            "add them to flip_map"
        ]


def test_a_detectron2_registered_file_of_other_keypoints_is_one_error_line_before_training(tmp_path, capsys):
    # Detectron2's own register_coco_instances leaves the config at COCO's 17 keypoints: the training
    # stopped at its first batch with the data loader's traceback ("expected 51 values ..., got 15").
    from detectron2.data.datasets import register_coco_instances

    from depotr.cli import run_main

    json_file, image_root = write_keypoint_dataset(tmp_path / "d", 2, KITE, 0)
    register_coco_instances("kite_d2", {}, json_file, image_root)
    try:
        args = instant_args(str(tmp_path / "run"), str(tmp_path / "syn"), "DATASETS.TRAIN", "('kite_d2',)",
                            "DATASETS.TEST", "()", "INPUT.CROP_AUG.HALF_BODY_PROB", "0.0")  # fmt: skip
        assert run_main(train_net.cli, ["--config-file", args.config_file, *args.opts]) == 2
    finally:
        unregister_dataset("kite_d2")
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error[0].startswith(
        f"error: dataset 'kite_d2': an annotation of {os.path.join(image_root, '0.png')} has 15 keypoint values, "
        "the config's MODEL.DEPOTR.NUM_KEYPOINTS 17 needs 51: register your keypoints with "
        "depotr.data.register_keypoint_dataset"
    ), error
    assert len(error) == 1 and not (tmp_path / "run" / "model_final.pth").exists()


@pytest.mark.parametrize("flip_map", ["[]", "[['L_Eye', 'R_Eye']]"], ids=["unpaired", "paired"])
def test_left_right_names_of_the_config_missing_from_its_flip_map_are_warned_about(tmp_path, flip_map):
    # The keypoints set in the config (a dataset registered with Detectron2's register_coco_instances):
    # L_Eye / R_Eye with an empty KEYPOINT_FLIP_MAP trained without a word.
    args = instant_args(
        str(tmp_path / "run"), str(tmp_path / "syn"), "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
        "MODEL.DEPOTR.NUM_KEYPOINTS", "3", "MODEL.DEPOTR.KEYPOINT_NAMES", "['L_Eye', 'R_Eye', 'nose']",
        "MODEL.DEPOTR.KEYPOINT_FLIP_MAP", flip_map, "TEST.KEYPOINT_OKS_SIGMAS", "[0.05, 0.05, 0.05]",
    )  # fmt: skip
    train_net.setup(args)
    log = (tmp_path / "run" / "log.txt").read_text()
    warning = (
        "MODEL.DEPOTR.KEYPOINT_NAMES: keypoints [['L_Eye', 'R_Eye']] are named as left/right mirrors but "
        "MODEL.DEPOTR.KEYPOINT_FLIP_MAP does not pair them"
    )
    assert (warning in log) == (flip_map == "[]"), log[-2000:]


@pytest.mark.parametrize(
    "key, value",
    [
        ("TEST.KEYPOINT_OKS_SIGMAS", [0.1] * 5),
        ("MODEL.DEPOTR.KEYPOINT_FLIP_MAP", [["tip", "tail"]]),
        ("MODEL.DEPOTR.KEYPOINT_SKELETON", [["tip", "tail"]]),
    ],
)
def test_keypoint_keys_the_config_sets_otherwise_than_the_dataset_are_an_error(registered, key, value):
    # fill_keypoint_config replaced them with the dataset's without a word: TEST.KEYPOINT_OKS_SIGMAS
    # [0.1] * K on the command line was evaluated with the registered (default 0.0669) sigmas.
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config

    train, _ = registered("kite_set", KITE, KITE_FLIP, skeleton=KITE_SKELETON)
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TRAIN = (train,)
    cfg.merge_from_list([key, value])
    with pytest.raises(ConfigError, match=rf"^{re.escape(f'{key} is {value}')} but dataset 'kite_set_train' "):
        fill_keypoint_config(cfg)
    # The dataset's own values set in the config (a run's config.yaml, say) fill as before.
    cfg.merge_from_list([key, [] if key != "TEST.KEYPOINT_OKS_SIGMAS" else [DEFAULT_OKS_SIGMA] * 5])
    assert "NUM_KEYPOINTS 5" in fill_keypoint_config(cfg)
    assert list(cfg.TEST.KEYPOINT_OKS_SIGMAS) == [DEFAULT_OKS_SIGMA] * 5
