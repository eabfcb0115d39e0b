"""PCKh (depotr.evaluation.pckh, tools/evaluate_mpii.py) against numbers computed by hand."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.io import savemat

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from depotr.data.custom import unregister_dataset
from depotr.data.keypoint_metadata import MPII_KEYPOINT_NAMES, MPII_OFFICIAL_JOINT_NAMES, mpii_person_metadata
from depotr.evaluation.pckh import PCKhEvaluator, load_mpii_gt_mat, pckh_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
J = {name: i for i, name in enumerate(MPII_OFFICIAL_JOINT_NAMES)}

# Two persons. Person 0: head box 30 x 40 (diagonal 50, head size 0.6 x 50 = 30: correct within
# 15 px at 0.5, 3.3 px at 0.11). Person 1: head box 6 x 8 (diagonal 10, head size 6: 3 px, 0.66 px).
HEAD_BOXES = np.array([[[0.0, 0.0], [30.0, 40.0]], [[10.0, 10.0], [16.0, 18.0]]])  # (P, 2, 2) 1-based
# Prediction errors along x, in pixels; the rest are exact.
ERRORS = [
    {"rank": 20, "lwri": 10, "rsho": 3, "head": 15, "thor": 100},  # thorax is left out of the means
    {"rkne": 4, "lsho": 3, "neck": 1, "lank": 100},  # lank (and pelv) not labelled for person 1
]
MISSING = [(), ("lank", "pelv")]
# By hand. At 0.5 wrong: rank (p0), rkne (p1), thor (p0, not in the means). Labelled joints in the
# means: 14 joints x 2 persons - lank of p1 = 27, of which 25 correct: Mean = 100 x 25 / 27.
# At 0.11 also wrong: lwri 10 > 3.3, head 15 > 3.3 (p0); lsho 3 > 0.66, neck 1 > 0.66 (p1); rsho
# 3 <= 3.3 stays right: 21 of 27. Groups at 0.5: Knee (100 + 50) / 2, Ankle (50 + 100) / 2.
EXPECTED = {
    "Head": 100.0,
    "Shoulder": 100.0,
    "Elbow": 100.0,
    "Wrist": 100.0,
    "Hip": 100.0,
    "Knee": 75.0,
    "Ankle": 75.0,
    "Mean": 100.0 * 25 / 27,
    "Mean@0.1": 100.0 * 21 / 27,
}


def _ground_truth():
    """(P, 16, 2) 1-based positions, (P, 16) missing, (P, 16, 2) 0-based predictions."""
    rng = np.random.default_rng(0)
    positions = rng.integers(20, 200, size=(2, 16, 2)).astype(np.float64)
    missing = np.zeros((2, 16), bool)
    preds = positions - 1.0
    for p in range(2):
        for name, dx in ERRORS[p].items():
            preds[p, J[name], 0] += dx
        for name in MISSING[p]:
            missing[p, J[name]] = True
    return positions, missing, preds


def _write_gt_mat(path, positions, missing, joint_order):
    """gt_valid.mat in the official layout with the joints in ``joint_order``."""
    names = np.empty((1, 16), dtype=object)
    for i, k in enumerate(joint_order):
        names[0, i] = np.array([MPII_OFFICIAL_JOINT_NAMES[k]])
    savemat(
        path,
        {
            "dataset_joints": names,
            "jnt_missing": missing[:, joint_order].T.astype(np.float64),
            "pos_gt_src": np.transpose(positions[:, joint_order], (1, 2, 0)),
            "headboxes_src": np.transpose(HEAD_BOXES, (1, 2, 0)),
        },
    )


def _check(table):
    for key, value in EXPECTED.items():
        assert table[key] == pytest.approx(value, abs=1e-9), key


def test_pckh_table_matches_the_hand_computation(tmp_path):
    positions, missing, preds = _ground_truth()
    _write_gt_mat(tmp_path / "gt.mat", positions, missing, list(range(16)))
    gt = load_mpii_gt_mat(str(tmp_path / "gt.mat"))
    assert list(gt.joint_names) == list(MPII_OFFICIAL_JOINT_NAMES)
    np.testing.assert_allclose(gt.head_sizes, [30.0, 6.0])
    _check(pckh_table(preds, gt))
    # Joints are found by name: the same persons with the joints stored in another order.
    order = list(np.random.default_rng(1).permutation(16))
    _write_gt_mat(tmp_path / "shuffled.mat", positions, missing, order)
    _check(pckh_table(preds[:, order], load_mpii_gt_mat(str(tmp_path / "shuffled.mat"))))


def test_missing_prediction_counts_wrong(tmp_path):
    positions, missing, preds = _ground_truth()
    _write_gt_mat(tmp_path / "gt.mat", positions, missing, list(range(16)))
    preds[1] = np.nan
    table = pckh_table(preds, load_mpii_gt_mat(str(tmp_path / "gt.mat")))
    # Person 0 alone is right on 12 of its 14 joints in the means (rank wrong); person 1's 13 all wrong.
    assert table["Mean"] == pytest.approx(100.0 * 13 / 27)
    assert table["Knee"] == pytest.approx(50.0)


def test_gt_mat_errors_name_the_field(tmp_path):
    positions, missing, _ = _ground_truth()
    path = tmp_path / "bad.mat"
    savemat(path, {"jnt_missing": missing.T.astype(float), "pos_gt_src": np.zeros((16, 2, 2))})
    with pytest.raises(ValueError, match="dataset_joints"):
        load_mpii_gt_mat(str(path))
    _write_gt_mat(path, positions, missing, list(range(16)))
    savemat(path, {**_loadmat_fields(path), "headboxes_src": np.zeros((2, 2, 3))})
    with pytest.raises(ValueError, match=r"headboxes_src has shape \(2, 2, 3\)"):
        load_mpii_gt_mat(str(path))


def test_tool_errors_name_the_file_in_one_line(tmp_path, capsys):
    """The friction: a --gt or --pred that is no .mat file was scipy's MatReadError ("Mat file
    appears to be truncated") naming neither; a config typo was a ConfigError traceback, status 1."""
    from depotr.cli import run_main
    from tests.conftest import load_script

    main = load_script(os.path.join("tools", "evaluate_mpii.py")).main
    positions, missing, _ = _ground_truth()
    _write_gt_mat(tmp_path / "gt_valid.mat", positions, missing, list(range(16)))
    (tmp_path / "notes.mat").write_text("not a .mat file\n")
    for gt, pred, what in (("notes", "gt_valid", "MPII ground truth"), ("gt_valid", "notes", "MPII predictions")):
        argv = ["--gt", str(tmp_path / f"{gt}.mat"), "--pred", str(tmp_path / f"{pred}.mat")]
        assert run_main(main, argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"evaluate_mpii: {what} {tmp_path / 'notes.mat'}: cannot read it as a .mat file (")
        assert len(err.splitlines()) == 1
    config = os.path.join(REPO, "configs", "depotr_hm_r18_synthetic_mpii.yaml")
    for overrides in (["TEST.FLIPP", "True"], ["--opts", "TEST.FLIPP", "True"]):  # bare or after --opts (docs/tools.md)
        assert run_main(main, ["--mean-pose-baseline", "--config-file", config, *overrides]) == 2
        assert (
            capsys.readouterr().err
            == "error: unknown config key TEST.FLIPP in the overrides; did you mean TEST.FLIP?\n"
        )


def _loadmat_fields(path):
    from scipy.io import loadmat

    return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}


def test_tool_prints_the_table_and_the_summary_line(tmp_path):
    positions, missing, preds = _ground_truth()
    _write_gt_mat(tmp_path / "gt_valid.mat", positions, missing, list(range(16)))
    savemat(tmp_path / "pred.mat", {"preds": preds})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects", "DePOTR"), REPO])}
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate_mpii.py"), "--gt", str(tmp_path / "gt_valid.mat"),
         "--pred", str(tmp_path / "pred.mat")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[-1] == f"PCKh Mean@0.5 {100 * 25 / 27:.3f} Mean@0.1 {100 * 21 / 27:.3f}"
    assert lines[0].split() == "Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean | Mean@0.1".split()
    assert [float(v) for v in lines[1].split("|")][5:7] == [75.0, 75.0]


@pytest.fixture
def mpii_dataset():
    """Two images, one person each, keypoints in a shuffled order of the MPII names (continuous
    pixels, as the loaders give them: 0-based index + 0.5)."""
    positions, missing, preds = _ground_truth()
    order = list(np.random.default_rng(2).permutation(16))  # dataset keypoint i = MPII joint order[i]
    names = [MPII_KEYPOINT_NAMES[k] for k in order]
    dicts = []
    for p in range(2):
        kps = np.concatenate([positions[p, order] - 0.5, np.where(missing[p, order], 0, 2)[:, None]], axis=1)
        dicts.append(
            {
                "image_id": p,
                "file_name": f"{p}.jpg",
                "height": 300,
                "width": 300,
                "annotations": [
                    {"bbox": [5.0, 5.0, 250.0, 250.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                     "keypoints": kps.ravel().tolist(), "head_box": (HEAD_BOXES[p] - 1.0).ravel().tolist()},
                ],
            }
        )  # fmt: skip
    name = "test_pckh_mpii_dataset"
    DatasetCatalog.register(name, lambda: dicts)
    meta = mpii_person_metadata()
    MetadataCatalog.get(name).set(**{**meta, "keypoint_names": names})
    yield name, preds, order
    unregister_dataset(name)


def _outputs(kps_xy, boxes):
    """Model outputs of 0-based predictions ``kps_xy``: continuous pixels, index + 0.5."""
    instances = Instances((300, 300))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    kps = torch.tensor(kps_xy + 0.5, dtype=torch.float32)
    instances.pred_keypoints = torch.cat([kps, torch.ones(*kps.shape[:2], 1)], dim=2)
    return {"instances": instances}


def test_evaluator_matches_boxes_and_reorders_keypoints(mpii_dataset, tmp_path):
    name, preds, order = mpii_dataset
    evaluator = PCKhEvaluator(name, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    box = [5.0, 5.0, 255.0, 255.0]
    far = [200.0, 200.0, 299.0, 299.0]  # a second detection on image 1 that overlaps nobody
    evaluator.process([{"image_id": 0}], [_outputs(preds[0:1][:, order], [box])])
    evaluator.process([{"image_id": 1}], [_outputs(np.stack([preds[0][order] * 0, preds[1][order]]), [far, box])])
    _check(evaluator.evaluate()["PCKh"])
    from scipy.io import loadmat

    np.testing.assert_allclose(loadmat(tmp_path / "pred.mat")["preds"], preds)  # official joint order


def test_evaluator_without_head_boxes_uses_pck_of_the_box(mpii_dataset):
    name, preds, order = mpii_dataset
    for d in DatasetCatalog.get(name):
        d["annotations"][0]["bbox"] = [5.0, 5.0, 60.0, 60.0]
        del d["annotations"][0]["head_box"]
    evaluator = PCKhEvaluator(name, distributed=False)
    evaluator.reset()
    box = [5.0, 5.0, 65.0, 65.0]
    for p in range(2):
        evaluator.process([{"image_id": p}], [_outputs(preds[p : p + 1][:, order], [box])])
    table = evaluator.evaluate()["PCKh"]
    # Box 60 x 60: PCK@0.2 = within 12 px: rank 20 and head 15 (p0) wrong, lwri 10 right: 25 of 27.
    # Mean@0.1: within 0.11 x (0.4 x 60) = 2.64 px: also lwri 10, rsho 3 (p0), rkne 4, lsho 3 (p1)
    # wrong, neck 1 right: 21 of 27.
    assert table["Mean"] == pytest.approx(100.0 * 25 / 27)
    assert table["Mean@0.1"] == pytest.approx(100.0 * 21 / 27)
    assert table["Head"] == pytest.approx(50.0)
    assert table["NumBoxNormalised"] == 2
