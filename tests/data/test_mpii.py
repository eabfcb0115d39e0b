"""MPII files (depotr.data.mpii), the synthetic persons in MPII's files (depotr.data.synthetic_mpii),
the PCKh mean-pose baseline and the embedded MPII path end to end through train_net."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import Boxes, Instances

import train_net
from depotr.cli import ConfigError
from depotr.data import register_mpii
from depotr.data.keypoint_metadata import MPII_KEYPOINT_NAMES, MPII_OFFICIAL_JOINT_NAMES
from depotr.data.mpii import load_mpii_json, mpii_box
from depotr.data.synthetic_mpii import coco_person_to_mpii, ensure_synthetic_mpii_split
from depotr.evaluation.pckh import PCKhEvaluator, load_mpii_gt_mat, mean_pose_pckh_baseline

from ..engine.conftest import REPO

MPII_INSTANT = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_mpii_instant_test.yaml")
J = {name: i for i, name in enumerate(MPII_KEYPOINT_NAMES)}


def _person(image, center, scale, rng, offset=(0.0, 0.0)):
    joints = rng.uniform(20, 80, size=(16, 2)) + offset
    vis = np.ones(16, int)
    vis[J["pelvis"]] = 0
    return {"image": image, "center": list(center), "scale": scale, "joints": joints.tolist(),
            "joints_vis": vis.tolist()}  # fmt: skip


def _write_mpii(folder, entries, sizes):
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for image, (w, h) in sizes.items():
        cv2.imwrite(os.path.join(folder, "images", image), np.zeros((h, w, 3), np.uint8))
    json_file = os.path.join(folder, "valid.json")
    with open(json_file, "w") as f:
        json.dump(entries, f)
    return json_file, os.path.join(folder, "images")


def test_boxes_keypoints_and_person_order(tmp_path):
    rng = np.random.default_rng(0)
    entries = [_person("a.jpg", (101, 51), 0.5, rng), _person("b.jpg", (60, 60), 0.3, rng),
               _person("a.jpg", (-1, 40), 0.4, rng)]  # fmt: skip
    json_file, image_root = _write_mpii(tmp_path, entries, {"a.jpg": (120, 90), "b.jpg": (70, 80)})
    dicts = load_mpii_json(json_file, image_root)
    assert [(d["file_name"][-5:], d["width"], d["height"]) for d in dicts] == [("a.jpg", 120, 90), ("b.jpg", 70, 80)]
    a0, a2 = dicts[0]["annotations"]
    assert [a0["person_index"], a2["person_index"], dicts[1]["annotations"][0]["person_index"]] == [0, 2, 1]
    # HRNet: centre y + 15 x 0.5 = 58.5, scale x 1.25 = 0.625 -> side 125; 1-based pixel (101, 58.5)
    # is (100.5, 58) in Detectron2's continuous coordinates (pixel index i's centre at i + 0.5).
    assert a0["bbox"] == pytest.approx([38.0, -4.5, 125.0, 125.0])
    assert mpii_box((-1, 40), 0.4) == pytest.approx([-41.5, -0.5, 80.0, 80.0])  # x = -1: no adjustment
    kps = np.asarray(a0["keypoints"]).reshape(16, 3)
    np.testing.assert_allclose(kps[:, :2][kps[:, 2] > 0], np.asarray(entries[0]["joints"])[kps[:, 2] > 0] - 0.5)
    assert kps[J["pelvis"]].tolist() == [0, 0, 0] and (np.delete(kps[:, 2], J["pelvis"]) == 2).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.pop("scale"), "entry 1: missing field 'scale'"),
        (lambda e: e.update(joints=[[0, 0]] * 14), r"entry 1: field 'joints' has shape \(14, 2\)"),
        (lambda e: e.update(joints_vis=[1] * 17), "entry 1: field 'joints_vis' has 17 values"),
        (lambda e: e.update(center=[1, "x"]), "entry 1: field 'center'"),
        (lambda e: e.update(image=5), "entry 1: field 'image' is 5, expected an image file name"),
        (lambda e: e.update(joints_vis=[1] * 15 + ["x"]), "entry 1: field 'joints_vis' must be 16 numbers"),
        (lambda e: e.update(joints=[[float("nan"), 0]] * 16), "entry 1: field 'joints' must be finite numbers"),
        (lambda e: e.update(joints=[["50", 0]] * 16), "entry 1: field 'joints' must be finite numbers"),
        (lambda e: e.update(image="b.jpg"), r"entry 1: image .*b\.jpg does not exist"),
    ],
    ids=[
        "no-scale",
        "joints-14",
        "joints-vis-17",
        "center-string",
        "image-int",
        "joints-vis-string",
        "joints-nan",
        "joints-string",
        "missing-image",
    ],
)
def test_malformed_entries_name_file_entry_and_field(tmp_path, change, message):
    rng = np.random.default_rng(0)
    entries = [_person("a.jpg", (50, 50), 0.5, rng), _person("a.jpg", (50, 50), 0.5, rng)]
    change(entries[1])
    json_file, image_root = _write_mpii(tmp_path, entries, {"a.jpg": (100, 100)})
    with pytest.raises(ConfigError, match=message) as info:  # train_net.py: one "error: ..." line
        load_mpii_json(json_file, image_root)
    assert json_file in str(info.value)


def test_evaluator_follows_the_file_order_of_the_gt_mat(tmp_path):
    """Persons of one image that are not adjacent in the file: the .mat columns are in file order.
    Exact predictions in the model's continuous coordinates are written as the 0-based joints."""
    rng = np.random.default_rng(1)
    entries = [_person("a.jpg", (30, 30), 0.3, rng), _person("b.jpg", (50, 50), 0.3, rng),
               _person("a.jpg", (80, 70), 0.3, rng, offset=(40, 30))]  # fmt: skip
    json_file, image_root = _write_mpii(tmp_path, entries, {"a.jpg": (160, 140), "b.jpg": (100, 100)})
    joints = np.asarray([e["joints"] for e in entries])  # (P, 16, 2) 1-based
    names = np.empty((1, 16), dtype=object)
    for j, name in enumerate(MPII_OFFICIAL_JOINT_NAMES):
        names[0, j] = np.array([name])
    head_boxes = np.stack([joints[:, J["head_top"]] - 5, joints[:, J["head_top"]] + 5], axis=1)  # (P, 2, 2)
    mat = str(tmp_path / "gt_valid.mat")
    savemat(mat, {"dataset_joints": names, "jnt_missing": (1 - np.asarray([e["joints_vis"] for e in entries])).T,
                  "pos_gt_src": joints.transpose(1, 2, 0), "headboxes_src": head_boxes.transpose(1, 2, 0)})  # fmt: skip
    register_mpii("test_mpii_order", json_file, image_root, mat)
    try:
        evaluator = PCKhEvaluator("test_mpii_order", distributed=False, output_dir=str(tmp_path))
        evaluator.reset()
        for d in DatasetCatalog.get("test_mpii_order"):  # each person predicted exactly, in its own box
            instances = Instances((d["height"], d["width"]))
            boxes = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
            boxes[:, 2:] += boxes[:, :2]
            instances.pred_boxes = Boxes(boxes)
            instances.pred_boxes.clip((d["height"], d["width"]))
            kps = torch.tensor(
                np.stack([joints[a["person_index"]] - 0.5 for a in d["annotations"]]), dtype=torch.float32
            )
            instances.pred_keypoints = torch.cat([kps, torch.ones(len(kps), 16, 1)], dim=2)
            evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
        table = evaluator.evaluate()["PCKh"]
        assert table["Mean"] == 100.0 and table["Mean@0.1"] == 100.0 and table["NumPersons"] == 3
        np.testing.assert_allclose(loadmat(tmp_path / "pred.mat")["preds"], joints - 1.0)
    finally:
        DatasetCatalog.remove("test_mpii_order")
        MetadataCatalog.remove("test_mpii_order")


def test_coco_person_to_mpii_by_hand():
    kps = np.zeros((17, 3))
    # nose, eyes, ears; shoulders at (40, 50) / (60, 50); hips at (42, 90) / (58, 90).
    kps[0:5] = [[50, 30, 2], [48, 28, 2], [52, 28, 2], [46, 30, 1], [54, 30, 0]]
    kps[5], kps[6], kps[11], kps[12] = [40, 50, 2], [60, 50, 2], [42, 90, 2], [58, 90, 2]
    kps[9] = [30, 70, 2]  # left wrist
    joints, labelled, head_box, outside = coco_person_to_mpii(kps, 100, 100)
    assert joints[J["pelvis"]].tolist() == [50, 90] and joints[J["thorax"]].tolist() == [50, 50]
    # Face mean of the labelled nose, eyes, left ear: (49, 29); u = (-1, -21).
    assert joints[J["upper_neck"]] == pytest.approx([49.6, 41.6])
    assert joints[J["head_top"]] == pytest.approx([48.5, 18.5])
    side = 1.1 * np.hypot(1, 21)  # the square's side is the neck-to-top distance
    centre = (joints[J["upper_neck"]] + joints[J["head_top"]]) / 2
    np.testing.assert_allclose(head_box, [centre - side / 2, centre + side / 2])
    assert joints[J["left_wrist"]].tolist() == [30, 70] and labelled[J["left_wrist"]]
    assert not labelled[J["right_wrist"]] and outside == 0
    assert labelled.sum() == 9  # shoulders, hips, wrist + pelvis, thorax, neck, head top
    # A head top above the image is not labelled, and counted.
    high = kps.copy()
    high[kps[:, 2] > 0, 1] -= 25  # thorax at y = 25: upper neck at 16.6, head top at -6.5
    _, labelled_high, _, outside_high = coco_person_to_mpii(high, 100, 100)
    assert outside_high == 1 and not labelled_high[J["head_top"]] and labelled_high[J["upper_neck"]]


def test_synthetic_mpii_files_agree_with_the_synthetic_coco_split(tmp_path):
    root = str(tmp_path)
    paths = ensure_synthetic_mpii_split(root, "val", 4, 0, 256)
    with open(os.path.join(os.path.dirname(paths["image_root"]), "annotations.json")) as f:
        coco = json.load(f)
    gt = load_mpii_gt_mat(paths["gt_mat_file"])
    with open(paths["json_file"]) as f:
        entries = json.load(f)
    assert len(entries) == len(gt.positions) == len(coco["annotations"])  # every synthetic person has a head
    np.testing.assert_allclose(gt.positions, np.asarray([e["joints"] for e in entries]))
    dicts = load_mpii_json(paths["json_file"], paths["image_root"])
    # What the model gets from either file of the same images: the same boxes and keypoints.
    coco_dicts = load_coco_json(os.path.join(os.path.dirname(paths["image_root"]), "annotations.json"),
                                paths["image_root"])  # fmt: skip
    coco_annos = [a for d in coco_dicts for a in d["annotations"]]
    for coco_anno, anno in zip(coco_annos, [a for d in dicts for a in d["annotations"]]):
        x, y, w, h = coco_anno["bbox"]
        bx, by, bw, bh = anno["bbox"]  # the square of 1.25 x max(w, h) around the same centre
        assert bw == pytest.approx(1.25 * max(w, h)) and bh == bw
        assert (bx + bw / 2, by + bh / 2) == pytest.approx((x + w / 2, y + h / 2))
        kps = np.asarray(anno["keypoints"]).reshape(16, 3)
        ckps = np.asarray(coco_anno["keypoints"]).reshape(17, 3)
        assert kps[J["left_knee"]][:2] == pytest.approx(ckps[13][:2])
    assert ensure_synthetic_mpii_split(root, "val", 4, 0, 256) == paths  # reused


def test_mean_pose_baseline_by_hand(tmp_path):
    """Two training persons in 100 x 100 boxes that differ only at the wrists; the baseline's wrists
    are half-way, 25 px from each: wrong at a head size of 6 (3 px), every other joint right."""
    base = np.random.default_rng(2).uniform(10, 90, size=(16, 2))
    poses = []
    for dx in (-25.0, 25.0):
        p = base.copy()
        p[[J["left_wrist"], J["right_wrist"]], 0] += dx
        poses.append(p)
    sizes = {"a.jpg": (300, 300)}
    # scale 0.4 -> HRNet side 100; centre chosen so the box is [50.5, 50.5, 100, 100] (continuous).
    entries = [{"image": "a.jpg", "center": [101, 101 - 6], "scale": 0.4, "joints": (p + 50 + 1).tolist(),
                "joints_vis": [1] * 16} for p in poses]  # fmt: skip
    json_file, image_root = _write_mpii(tmp_path, entries, sizes)
    dicts = load_mpii_json(json_file, image_root)
    for anno in dicts[0]["annotations"]:
        assert anno["bbox"] == pytest.approx([50.5, 50.5, 100, 100])
        kps = np.asarray(anno["keypoints"]).reshape(16, 3)
        head = kps[J["head_top"], :2]
        anno["head_box"] = [head[0] - 3, head[1] - 4, head[0] + 3, head[1] + 4]  # 6 x 8: head size 6
    register_mpii("test_mpii_baseline", json_file, image_root)
    DatasetCatalog.remove("test_mpii_baseline")
    DatasetCatalog.register("test_mpii_baseline", lambda: dicts)
    try:
        table = mean_pose_pckh_baseline("test_mpii_baseline", "test_mpii_baseline")
    finally:
        DatasetCatalog.remove("test_mpii_baseline")
        MetadataCatalog.remove("test_mpii_baseline")
    assert table["Wrist"] == 0.0
    assert table["Head"] == table["Shoulder"] == table["Ankle"] == 100.0
    assert table["Mean"] == pytest.approx(100.0 * 12 / 14)  # 14 joints in the mean, the 2 wrists wrong


@pytest.mark.slow
def test_synthetic_mpii_trains_and_reports_pckh_through_train_net(tmp_path, restore_synthetic_registration):
    from detectron2.engine import default_argument_parser

    output_dir = tmp_path / "run"
    args = default_argument_parser().parse_args(
        ["--config-file", MPII_INSTANT, "OUTPUT_DIR", str(output_dir), "DATASETS.SYNTHETIC.ROOT", str(tmp_path / "syn")]
    )
    train_net.main(args)
    metrics = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    pckh = [m for m in metrics if "PCKh/Mean" in m][-1]
    assert 0.0 <= pckh["PCKh/Mean"] <= 100.0 and pckh["PCKh/NumBoxNormalised"] == 0
    # The written pred.mat, scored by the tool against the synthetic gt_valid.mat, gives the same Mean.
    gt_mat = MetadataCatalog.get("synthetic_mpii_val").gt_mat_file
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects", "DePOTR"), REPO])}
    pred = output_dir / "inference" / "synthetic_mpii_val" / "pred.mat"
    completed = subprocess.run([sys.executable, os.path.join(REPO, "tools", "evaluate_mpii.py"), "--gt", gt_mat,
                                "--pred", str(pred)], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    last = completed.stdout.strip().splitlines()[-1].split()
    assert float(last[2]) == pytest.approx(pckh["PCKh/Mean"], abs=1e-3)


@pytest.mark.parametrize(
    "config, num_keypoints",
    [("depotr_hm_r50_mpii.yaml", 16), ("depotr_hm_r18_synthetic_mpii.yaml", 16), ("depotr_hm_r50_crowdpose.yaml", 14)],
)
def test_dataset_configs_agree_with_their_registered_datasets(config, num_keypoints):
    from depotr.config import load_depotr_config
    from depotr.data.keypoint_metadata import KNOWN_KEYPOINT_ROWS, keypoint_metadata_from_config

    cfg = load_depotr_config(os.path.join(REPO, "configs", config))
    keypoints = keypoint_metadata_from_config(cfg)  # checks every registered dataset of the config
    for dataset in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        metadata = MetadataCatalog.get(dataset)
        assert list(metadata.keypoint_names) == list(keypoints.names)
    assert len(keypoints.names) == cfg.MODEL.DEPOTR.NUM_KEYPOINTS == num_keypoints
    # The sigmas come from the keypoint table, not typed again in the config.
    assert not cfg.TEST.KEYPOINT_OKS_SIGMAS
    table = {row[0]: row[2] for row in KNOWN_KEYPOINT_ROWS}
    assert keypoints.oks_sigmas == tuple(table[name] for name in keypoints.names)
    assert len(set(keypoints.flip_indices)) == num_keypoints and keypoints.flip_indices != tuple(range(num_keypoints))


def test_an_mpii_dataset_fills_an_empty_keypoint_config():
    """MPII's registrations carry no sigmas: the filled config takes the keypoint table's."""
    from depotr.config import load_depotr_config
    from depotr.data import fill_keypoint_config
    from depotr.data.keypoint_metadata import MPII_KEYPOINT_TABLE, keypoint_metadata_from_config

    cfg = load_depotr_config(os.path.join(REPO, "configs", "depotr_hm_r50_mpii.yaml"))
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES, cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = [], []
    assert fill_keypoint_config(cfg) is not None
    assert list(cfg.MODEL.DEPOTR.KEYPOINT_NAMES) == list(MPII_KEYPOINT_NAMES)
    assert keypoint_metadata_from_config(cfg).oks_sigmas == tuple(row[2] for row in MPII_KEYPOINT_TABLE)
