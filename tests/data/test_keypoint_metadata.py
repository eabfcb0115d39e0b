"""The model's keypoints come from the config alone (keypoint_metadata_from_config); registered
datasets of the config are checked against it, other registrations change nothing."""

import pytest

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from depotr.config import add_depotr_config
from depotr.data.custom import unregister_dataset
from depotr.data.keypoint_metadata import (
    COCO_PERSON_FLIP_INDICES,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_OKS_SIGMAS,
    keypoint_metadata_from_config,
    name_flip_indices,
)

# COCO order: nose, then (left, right) eye, ear, shoulder, elbow, wrist, hip, knee, ankle.
COCO_FLIP_BY_HAND = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
HAND_NAMES = ["head", "left_hand", "right_hand", "tail"]
HAND_FLIP_MAP = [["left_hand", "right_hand"]]
TEST_DATASETS = ("kpmeta_test_a", "kpmeta_test_b")


def _cfg(train=(), test=(), names=(), flip_map=(), sigmas=(), num_keypoints=17):
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = list(names)
    cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = [list(pair) for pair in flip_map]
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = num_keypoints
    cfg.TEST.KEYPOINT_OKS_SIGMAS = list(sigmas)
    return cfg


@pytest.fixture
def register():
    """register(name, **metadata) registers an empty dataset; removed after the test."""

    def _register(name, **metadata):
        DatasetCatalog.register(name, list)
        MetadataCatalog.get(name).set(**metadata)

    yield _register
    for name in TEST_DATASETS:
        unregister_dataset(name)


def test_default_is_the_coco_table():
    meta = keypoint_metadata_from_config(_cfg())
    assert meta.names == COCO_PERSON_KEYPOINT_NAMES
    assert meta.flip_indices == COCO_PERSON_FLIP_INDICES == COCO_FLIP_BY_HAND
    assert meta.oks_sigmas == COCO_PERSON_OKS_SIGMAS
    assert len(meta.flip_map) == 8


def test_names_and_flip_map_from_the_config():
    cfg = _cfg(names=HAND_NAMES, flip_map=HAND_FLIP_MAP, sigmas=[0.1, 0.2, 0.2, 0.3], num_keypoints=4)
    meta = keypoint_metadata_from_config(cfg)
    assert meta.names == tuple(HAND_NAMES) and meta.flip_map == (("left_hand", "right_hand"),)
    assert meta.flip_indices == (0, 2, 1, 3)
    assert meta.oks_sigmas == (0.1, 0.2, 0.2, 0.3)


def test_table_sigmas_for_table_names_in_another_order():
    names = ["right_wrist", "nose", "left_wrist"]
    meta = keypoint_metadata_from_config(_cfg(names=names, flip_map=[["left_wrist", "right_wrist"]], num_keypoints=3))
    assert meta.flip_indices == (2, 1, 0)
    assert meta.oks_sigmas == (0.062, 0.026, 0.062)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_keypoints": 5}, "17 keypoint names .*MODEL.DEPOTR.NUM_KEYPOINTS is 5"),
        ({"flip_map": HAND_FLIP_MAP}, "KEYPOINT_FLIP_MAP is set but MODEL.DEPOTR.KEYPOINT_NAMES is empty"),
        (
            {"names": HAND_NAMES, "flip_map": [["left_hand", "right_foot"]], "num_keypoints": 4, "sigmas": [0.1] * 4},
            r"KEYPOINT_FLIP_MAP: .*\['right_foot'\] that are not in keypoint_names",
        ),
        ({"names": HAND_NAMES, "flip_map": [["left_hand"]], "num_keypoints": 4, "sigmas": [0.1] * 4}, "pairs of names"),
        ({"names": ["a", "a"], "num_keypoints": 2, "sigmas": [0.1] * 2}, "repeated names"),
        ({"sigmas": [0.1] * 16}, "KEYPOINT_OKS_SIGMAS has 16 values for 17 keypoints"),
        (
            {"names": HAND_NAMES, "flip_map": HAND_FLIP_MAP, "num_keypoints": 4},
            r"\['left_hand', 'right_hand', 'tail'\] have no OKS sigma .* set TEST.KEYPOINT_OKS_SIGMAS",
        ),
    ],
    ids=["num_keypoints", "map_without_names", "unknown_pair_name", "not_a_pair", "repeated", "sigmas", "no_sigma"],
)
def test_bad_config_names_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keypoint_metadata_from_config(_cfg(**kwargs))


def test_registered_datasets_are_checked_naming_dataset_and_field(register):
    register(
        "kpmeta_test_a",
        keypoint_names=list(COCO_PERSON_KEYPOINT_NAMES[::-1]),
        keypoint_flip_map=[("left_eye", "right_eye")],
    )
    with pytest.raises(ValueError, match="dataset 'kpmeta_test_a' has keypoint_names"):
        keypoint_metadata_from_config(_cfg(test=["kpmeta_test_a"]))
    register(
        "kpmeta_test_b", keypoint_names=list(COCO_PERSON_KEYPOINT_NAMES), keypoint_flip_map=[("left_eye", "right_eye")]
    )  # 7 pairs missing
    with pytest.raises(ValueError, match="dataset 'kpmeta_test_b' has keypoint_flip_map"):
        keypoint_metadata_from_config(_cfg(train=["synthetic_persons_train"], test=["kpmeta_test_b"]))


def test_other_registrations_change_nothing(register):
    """A registered dataset with other keypoints, not named by the config, is ignored; an
    unregistered name and a dataset without keypoint metadata are not checked; COCO's builtin
    (tuples) and the synthetic set (lists) agree with the default."""
    register("kpmeta_test_a", keypoint_names=["x"], keypoint_flip_map=[])
    register("kpmeta_test_b", thing_classes=["person"])
    expected = keypoint_metadata_from_config(_cfg())
    cfg = _cfg(
        train=["synthetic_persons_train", "not_registered_anywhere"], test=["keypoints_coco_2017_val", "kpmeta_test_b"]
    )
    assert keypoint_metadata_from_config(cfg) == expected


def test_crop_augmentation_takes_the_config_flip_indices(register):
    from depotr.modeling.crop_augmentation import CropAugmentation

    register("kpmeta_test_a", keypoint_names=HAND_NAMES, keypoint_flip_map=[("left_hand", "right_hand")])
    cfg = _cfg(
        train=["kpmeta_test_a"],
        test=["kpmeta_test_a"],
        names=HAND_NAMES,
        flip_map=HAND_FLIP_MAP,
        sigmas=[0.1] * 4,
        num_keypoints=4,
    )
    assert CropAugmentation.from_config(cfg).flip_indices.tolist() == [0, 2, 1, 3]


def test_name_flip_indices_keeps_pairs_with_both_names():
    assert name_flip_indices(["left_eye", "nose", "right_eye", "left_ear", "tail"]) == [2, 1, 0, 3, 4]
    # Other naming conventions (AP-10K's L_Eye, Blender's eye.l) were no pairs: inversions went uncounted.
    assert name_flip_indices(["L_Eye", "R_Eye", "neck", "paw.r", "paw.l", "r1", "l1"]) == [1, 0, 2, 4, 3, 5, 6]


def test_model_takes_the_config_keypoints_whatever_is_registered(register):
    from depotr.modeling import TopDownPoseEstimator

    from ..modeling.test_branches import small_cfg

    register("kpmeta_test_a", keypoint_names=HAND_NAMES, keypoint_flip_map=[("left_hand", "right_hand")])
    cfg = small_cfg("regression", (64, 48))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("kpmeta_test_a",), ("not_registered_anywhere",)
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = 4
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES, cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = HAND_NAMES, HAND_FLIP_MAP
    cfg.TEST.KEYPOINT_OKS_SIGMAS = [0.1, 0.2, 0.2, 0.3]
    model = TopDownPoseEstimator(cfg)
    assert model.flip_indices == [0, 2, 1, 3] and model.oks_sigmas == [0.1, 0.2, 0.2, 0.3]
    cfg.DATASETS.TEST = ("synthetic_persons_val",)  # registered, COCO's 17 keypoints
    with pytest.raises(ValueError, match="dataset 'synthetic_persons_val' has keypoint_names"):
        TopDownPoseEstimator(cfg)


def test_registered_sigmas_that_differ_from_the_config_are_an_error(register):
    """A dataset registered with its own sigmas is not evaluated with the tables' by accident."""
    names = list(COCO_PERSON_KEYPOINT_NAMES[:5])  # in the COCO table, with other sigmas registered
    register("kpmeta_test_a", keypoint_names=names, keypoint_flip_map=[], keypoint_oks_sigmas=[0.2] * 5)
    cfg = _cfg(test=["kpmeta_test_a"], names=names, num_keypoints=5)
    with pytest.raises(ValueError, match=r"dataset 'kpmeta_test_a' has keypoint_oks_sigmas \[0.2, .*TEST.KEYPOINT"):
        keypoint_metadata_from_config(cfg)
    cfg.TEST.KEYPOINT_OKS_SIGMAS = [0.2] * 5
    assert keypoint_metadata_from_config(cfg).oks_sigmas == (0.2,) * 5


def test_the_skeleton_travels_in_the_config(tmp_path):
    """fill_keypoint_config writes the skeleton into the config, so a demo that loads the run's
    config.yaml in another process (the dataset not registered there) draws it."""
    from depotr.data import drawing_metadata, fill_keypoint_config, register_keypoint_dataset

    json_file = tmp_path / "hands.json"
    json_file.write_text("{}")  # registration reads no file
    skeleton = [("head", "left_hand"), ("head", "tail", (0, 0, 255))]
    register_keypoint_dataset("kpmeta_test_a", str(json_file), str(tmp_path), HAND_NAMES, HAND_FLIP_MAP, skeleton)
    try:
        cfg = _cfg(test=["kpmeta_test_a"])
        assert fill_keypoint_config(cfg)
        saved = tmp_path / "config.yaml"
        saved.write_text(cfg.dump())
    finally:
        unregister_dataset("kpmeta_test_a")
    loaded = get_cfg()
    add_depotr_config(loaded)
    loaded.merge_from_file(str(saved))
    drawn = drawing_metadata(loaded)["keypoint_connection_rules"]
    assert drawn == [("head", "left_hand", (255, 128, 0)), ("head", "tail", (0, 0, 255))]
    assert keypoint_metadata_from_config(loaded).names == tuple(HAND_NAMES)


@pytest.mark.parametrize(
    "skeleton",
    [[["head", "nose"]], [["head"]], [["head", "tail", "red"]], [["head", "tail", [0, 0, 256]]]],
    ids=["unknown_name", "one_name", "colour_word", "colour_out_of_range"],
)
def test_a_bad_skeleton_in_the_config_names_the_key(skeleton):
    cfg = _cfg(names=HAND_NAMES, flip_map=HAND_FLIP_MAP, num_keypoints=4, sigmas=[0.05] * 4)
    cfg.MODEL.DEPOTR.KEYPOINT_SKELETON = skeleton
    with pytest.raises(ValueError, match="MODEL.DEPOTR.KEYPOINT_SKELETON edges must be"):
        keypoint_metadata_from_config(cfg)
    coco = _cfg()
    coco.MODEL.DEPOTR.KEYPOINT_SKELETON = [["nose", "left_eye"]]
    with pytest.raises(ValueError, match="KEYPOINT_SKELETON is set but MODEL.DEPOTR.KEYPOINT_NAMES is empty"):
        keypoint_metadata_from_config(coco)
