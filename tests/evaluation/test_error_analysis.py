"""COCO keypoint results analysis (depotr.evaluation.error_analysis, tools/analyze_results.py)
on hand-made ground truth: one image with a large and a medium person."""

import copy
import json
import os

import numpy as np
import pytest
from matplotlib.image import imread
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_OKS_SIGMAS
from depotr.evaluation.error_analysis import (
    GOOD,
    INVERSION,
    JITTER,
    KEYPOINT_CLASSES,
    METRIC_NAMES,
    MISS,
    STAGES,
    SWAP,
    UNLABELLED,
    analyze_keypoint_results,
    classify_keypoints,
)
from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEFT_WRIST = COCO_PERSON_KEYPOINT_NAMES.index("left_wrist")
RIGHT_WRIST = COCO_PERSON_KEYPOINT_NAMES.index("right_wrist")
SIGMAS = np.array(COCO_PERSON_OKS_SIGMAS)

# A standing person in a unit box, (K, 2) x, y in COCO keypoint order (person's left = image right).
SKELETON = np.array(
    [
        [0.50, 0.10],
        [0.55, 0.08],
        [0.45, 0.08],
        [0.60, 0.10],
        [0.40, 0.10],
        [0.75, 0.25],
        [0.25, 0.25],
        [0.85, 0.45],
        [0.15, 0.45],
        [0.90, 0.60],
        [0.10, 0.60],
        [0.65, 0.60],
        [0.35, 0.60],
        [0.65, 0.80],
        [0.35, 0.80],
        [0.65, 0.97],
        [0.35, 0.97],
    ]
)
LARGE_BOX, MEDIUM_BOX = (40.0, 60.0, 150.0, 300.0), (260.0, 200.0, 60.0, 120.0)  # areas 45000 and 7200


def _person(ann_id, image_id, box, visibility=None):
    x0, y0, w, h = box
    v = np.full(17, 2.0) if visibility is None else np.asarray(visibility, dtype=float)
    keypoints = np.concatenate([SKELETON * [w, h] + [x0, y0], v[:, None]], 1) * (v[:, None] > 0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": keypoints.reshape(-1).tolist(),
        "num_keypoints": int((v > 0).sum()),
        "area": w * h,
        "bbox": list(box),
        "iscrowd": 0,
    }


def _coco(images, annotations):
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": []}]
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 480, "width": 640} for i in images],
        "annotations": annotations,
        "categories": categories,
    }


def _result(keypoints, image_id=1, score=1.0):
    return {
        "image_id": image_id,
        "category_id": 1,
        "keypoints": np.asarray(keypoints, float).reshape(-1).tolist(),
        "score": score,
    }


@pytest.fixture
def gt():
    return _coco([1], [_person(1, 1, LARGE_BOX), _person(2, 1, MEDIUM_BOX)])


def _perfect(gt):
    return [_result(a["keypoints"]) for a in gt["annotations"]]


def _edit_large(gt, edit):
    """Perfect results with the large person's (17, 3) keypoints changed by ``edit``."""
    results = _perfect(gt)
    keypoints = np.array(results[0]["keypoints"]).reshape(17, 3)
    edit(keypoints, np.array(gt["annotations"][1]["keypoints"]).reshape(17, 3))
    results[0]["keypoints"] = keypoints.reshape(-1).tolist()
    return results


def _jitter_all(keypoints, _):
    # Offsets giving ks = 0.7 per keypoint: exp(-d^2 / (2 area (2 sigma)^2)) = 0.7.
    keypoints[:, 0] += np.sqrt(-np.log(0.7) * 2 * 45000.0 * (2 * SIGMAS) ** 2)


def _invert_wrists(keypoints, _):
    keypoints[[LEFT_WRIST, RIGHT_WRIST]] = keypoints[[RIGHT_WRIST, LEFT_WRIST]]


def _wrist_from_neighbour(keypoints, neighbour):
    keypoints[LEFT_WRIST, :2] = neighbour[LEFT_WRIST, :2]


def _wrist_far_away(keypoints, _):
    keypoints[LEFT_WRIST, :2] = (620.0, 460.0)


def test_perfect_results_give_one_everywhere(gt):
    analysis = analyze_keypoint_results(gt, _perfect(gt))
    assert analysis.metrics == pytest.approx({name: 1.0 for name in METRIC_NAMES})
    np.testing.assert_allclose(analysis.ap, 1.0)
    np.testing.assert_allclose(analysis.ap_mean, 1.0)
    assert analysis.keypoint_counts() == {"good": 34, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}
    assert (analysis.num_background_fp, analysis.num_false_negatives) == (0, 0)


@pytest.mark.parametrize(
    "edit, keypoint_class, indices, stage",
    [
        (_jitter_all, JITTER, list(range(17)), "Jitter"),
        (_invert_wrists, INVERSION, [LEFT_WRIST, RIGHT_WRIST], "Inversion"),
        (_wrist_from_neighbour, SWAP, [LEFT_WRIST], "Swap"),
        (_wrist_far_away, MISS, [LEFT_WRIST], "Miss"),
    ],
    ids=["jitter", "inversion", "swap", "miss"],
)
def test_keypoint_error_is_classified_and_its_correction_restores_ap(gt, edit, keypoint_class, indices, stage):
    analysis = analyze_keypoint_results(gt, _edit_large(gt, edit))
    labels = analysis.keypoint_labels
    assert np.flatnonzero(labels[0] == keypoint_class).tolist() == indices
    assert np.flatnonzero(labels[0] != GOOD).tolist() == indices
    assert (labels[1] == GOOD).all()
    assert analysis.keypoint_counts()[KEYPOINT_CLASSES[keypoint_class]] == len(indices)

    stage = STAGES.index(stage)
    assert analysis.ap_mean[stage - 1] < 0.99  # the error costs AP until its own stage ...
    np.testing.assert_allclose(analysis.ap[stage:], 1.0)  # ... whose correction restores all of it
    assert analysis.metrics["AP"] == analysis.ap_mean[0]


def test_inversion_is_not_fixed_by_jitter_correction(gt):
    analysis = analyze_keypoint_results(gt, _edit_large(gt, _invert_wrists))
    np.testing.assert_array_equal(analysis.ap[STAGES.index("Jitter")], analysis.ap[0])
    assert analysis.ap_mean[0] < analysis.ap_mean[STAGES.index("Inversion")] == pytest.approx(1.0)


def test_flip_indices_decide_the_inversions(gt):
    """Passed-in flip indices replace the table's: with only the eye, ear, shoulder and elbow
    pairs, swapped wrists are misses (no mirror, no other person near); a wrong number of
    indices is an error."""
    no_wrist_pair = [0, 2, 1, 4, 3, 6, 5, 8, 7, *range(9, 17)]
    labels = analyze_keypoint_results(gt, _edit_large(gt, _invert_wrists), flip_indices=no_wrist_pair).keypoint_labels
    assert np.flatnonzero(labels[0] == MISS).tolist() == [LEFT_WRIST, RIGHT_WRIST]
    with pytest.raises(ValueError, match="not a permutation of the ground truth's 17 keypoints"):
        analyze_keypoint_results(gt, _perfect(gt), flip_indices=list(range(16)))


def test_background_false_positive_is_removed(gt):
    far_person = _person(0, 1, (560.0, 380.0, 60.0, 90.0))
    results = _perfect(gt) + [_result(far_person["keypoints"], score=2.0)]
    analysis = analyze_keypoint_results(gt, results)
    assert analysis.num_background_fp == 1
    assert len(analysis.keypoint_labels) == 2
    assert analysis.ap_mean[STAGES.index("Miss")] < 0.99
    np.testing.assert_allclose(analysis.ap[STAGES.index("BckgFP") :], 1.0)


def test_false_negative_is_removed(gt):
    analysis = analyze_keypoint_results(gt, _perfect(gt)[:1])
    assert analysis.num_false_negatives == 1
    assert analysis.ap_mean[STAGES.index("BckgFP")] < 0.99
    np.testing.assert_allclose(analysis.ap[STAGES.index("FN")], 1.0)


def test_unlabelled_keypoint_and_nose_classes():
    visibility = np.full(17, 2)
    visibility[COCO_PERSON_KEYPOINT_NAMES.index("left_ear")] = 0
    person = np.array(_person(1, 1, LARGE_BOX, visibility)["keypoints"]).reshape(17, 3)
    pred = person[:, :2].copy()
    pred[0] = (620.0, 460.0)  # nose far away: a miss (the nose has no mirror to be inverted onto)
    mirror = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
    labels = classify_keypoints(pred, person, 45000.0, np.zeros((0, 17, 3)), np.zeros(0), SIGMAS, mirror)
    assert labels[0] == MISS
    assert labels[COCO_PERSON_KEYPOINT_NAMES.index("left_ear")] == UNLABELLED
    assert (np.delete(labels, [0, COCO_PERSON_KEYPOINT_NAMES.index("left_ear")]) == GOOD).all()


def _random_case(rng):
    """Three images of 3 persons (one without keypoints, ignored by COCOeval) and noisy
    results: one person missed, two hallucinated, random scores."""
    annotations = []
    for image_id in (1, 2, 3):
        for p, box in enumerate([(30.0, 50.0, 150.0, 300.0), (220.0, 80.0, 90.0, 180.0), (400.0, 100.0, 40.0, 80.0)]):
            visibility = rng.choice([0, 1, 2], 17, p=[0.15, 0.25, 0.6]) if p < 2 or image_id != 2 else np.zeros(17)
            annotations.append(_person(len(annotations) + 1, image_id, box, visibility))
    results = []
    for ann in annotations[:-1]:  # the last person is missed
        if ann["num_keypoints"] == 0:
            continue
        keypoints = np.zeros((17, 3))
        box = np.array(ann["bbox"])
        keypoints[:, :2] = SKELETON * box[2:] + box[:2] + rng.normal(0, rng.uniform(1, 15), (17, 2))
        keypoints[:, 2] = rng.uniform(0, 1, 17)
        results.append(_result(keypoints, ann["image_id"], float(rng.uniform(0.1, 1))))
    for image_id in (1, 3):
        results.append(
            _result(
                np.concatenate([rng.uniform(0, 600, (17, 2)), np.ones((17, 1))], 1),
                image_id,
                float(rng.uniform(0.1, 1)),
            )
        )
    return _coco([1, 2, 3], annotations), results


def _tool():
    return load_script("tools/analyze_results.py")


def _pycocotools_stats(gt_path, results_path):
    coco_gt = COCO(str(gt_path))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(results_path)), iouType="keypoints")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


def test_cli_metrics_equal_pycocotools_and_plots_are_written(tmp_path):
    gt, results = _random_case(np.random.default_rng(3))
    gt_path, results_path, out = tmp_path / "gt.json", tmp_path / "results.json", tmp_path / "analysis"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))

    assert _tool().main(["--gt", str(gt_path), "--results", str(results_path), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    stats = _pycocotools_stats(gt_path, results_path)
    assert 0.1 < stats[0] < 0.95  # a case where the comparison means something
    assert [metrics[name] for name in METRIC_NAMES] == stats.tolist()

    breakdown = json.loads((out / "error_breakdown.json").read_text())
    assert breakdown["ap_mean"]["Original"] == stats[0]
    assert breakdown["ap"]["Original"][0] == stats[1] and breakdown["ap"]["Original"][5] == stats[2]
    assert breakdown["num_background_fp"] >= 1 and breakdown["num_false_negatives"] >= 1
    assert sum(breakdown["keypoint_counts"].values()) > 0
    assert all(stage in (out / "error_breakdown.md").read_text() for stage in STAGES)
    assert "| AP | AP50 |" in (out / "metrics.md").read_text()
    for name in ("pr_curves.png", "error_breakdown.png"):
        image = imread(str(out / name))
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name
        assert image[..., :3].std() > 0, name  # not a blank canvas


def test_sigmas_option_changes_the_evaluation(gt):
    results = _edit_large(gt, _jitter_all)
    default = analyze_keypoint_results(gt, results)
    wider = analyze_keypoint_results(gt, results, sigmas=list(2 * SIGMAS))
    assert wider.metrics["AP"] > default.metrics["AP"]
    assert wider.keypoint_counts()["good"] == 34  # ks 0.7 at sigma becomes 0.91 at 2 sigma


def test_cli_rejects_nan_in_a_results_file_naming_the_entry(tmp_path, gt, capsys):
    results = _perfect(gt)
    results[1]["keypoints"][7] = float("nan")
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))  # json.dumps writes NaN, json.load reads it
    argv = [
        "--gt",
        str(tmp_path / "gt.json"),
        "--results",
        str(tmp_path / "results.json"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert _tool().main(argv) == 1
    assert "results[1] has keypoint value nan at index 7" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "image_id, message",
    [
        (None, "results[1] lacks ['image_id']"),  # before: a KeyError traceback
        ([1], "results[1] has image_id [1], which is not in the ground truth"),  # before: a TypeError traceback
        ("1", "results name 1 image id(s) that are not in the ground truth"),
    ],
    ids=["missing", "list", "string"],
)
def test_cli_names_a_results_entry_with_a_bad_image_id(tmp_path, gt, capsys, image_id, message):
    results = _perfect(gt)
    if image_id is None:
        del results[1]["image_id"]
    else:
        results[1]["image_id"] = image_id
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    argv = ["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "results.json"), "--output", str(tmp_path)]
    assert _tool().main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("analyze_results: ") and message in err and len(err.splitlines()) == 1
    if image_id == "1":
        assert "(e.g. '1'; its ids are e.g. 1)" in err  # the string id told apart from the integer one


@pytest.mark.parametrize("missing", ["gt", "results"])
def test_cli_names_a_missing_file(tmp_path, gt, capsys, missing):
    paths = {"gt": tmp_path / "gt.json", "results": tmp_path / "results.json"}
    paths["gt"].write_text(json.dumps(gt))
    paths["results"].write_text(json.dumps(_perfect(gt)))
    paths[missing].unlink()
    argv = ["--gt", str(paths["gt"]), "--results", str(paths["results"]), "--output", str(tmp_path / "out")]
    assert _tool().main(argv) == 1
    assert f"file not found: {paths[missing]}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _short_keypoints(results):
    results[1]["keypoints"] = results[1]["keypoints"][:-3]


def _unknown_image(results):
    results[0]["image_id"] = 99


def _no_score(results):
    del results[1]["score"]


def _nan_keypoint(results):
    results[1]["keypoints"][4] = float("nan")


def _nan_score(results):
    results[1]["score"] = float("nan")


def _string_keypoint(results):
    results[0]["keypoints"][0] = "3"


def _null_keypoints(results):
    results[1]["keypoints"] = None


def _list_image_id(results):
    results[1]["image_id"] = [1]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_short_keypoints, r"results\[1\] has 48 keypoint values, expected 3 \* 17 = 51"),
        (_unknown_image, r"results\[0\] has image_id 99, which is not in the ground truth"),
        (_no_score, r"results\[1\] lacks \['score'\]"),
        (lambda results: results.clear(), r"results must be a non-empty json list"),
        (_nan_keypoint, r"results\[1\] has keypoint value nan at index 4; expected finite numbers"),
        (_nan_score, r"results\[1\] has score nan; expected a finite number"),
        (_string_keypoint, r"results\[0\] has keypoint value '3' at index 0"),
        # before: TypeError tracebacks
        (_null_keypoints, r"results\[1\] has keypoints None; expected a list of 3 \* 17 = 51 numbers"),
        (_list_image_id, r"results\[1\] has image_id \[1\], which is not in the ground truth"),
    ],
    ids=[
        "keypoint_length",
        "unknown_image",
        "no_score",
        "empty",
        "nan_keypoint",
        "nan_score",
        "string_keypoint",
        "null_keypoints",
        "list_image_id",
    ],
)
def test_bad_results_raise(gt, corrupt, message):
    results = _perfect(gt)
    corrupt(results)
    with pytest.raises(ValueError, match=message):
        analyze_keypoint_results(gt, results)


def test_bad_ground_truth_ids_raise(gt):
    # before: pycocotools indexes by id, so perfect results scored AP 0.25 with two persons of one
    # id, two images of one id were evaluated as one, and an annotation of an unknown image was
    # dropped from the metrics (the bins then raised)
    results = _perfect(gt)
    repeated_person = copy.deepcopy(gt)
    repeated_person["annotations"][1]["id"] = 1
    with pytest.raises(ValueError, match="ground-truth annotations ids must be unique, repeated: 1"):
        analyze_keypoint_results(repeated_person, results)
    repeated_image = _coco([1, 1], gt["annotations"])
    with pytest.raises(ValueError, match="ground-truth images ids must be unique, repeated: 1"):
        analyze_keypoint_results(repeated_image, results)
    gt["annotations"][1]["image_id"] = 7
    with pytest.raises(ValueError, match=r"ground-truth annotations\[1\] has image_id 7, not in 'images'"):
        analyze_keypoint_results(gt, results)


def test_crowd_region_is_ignored_as_pycocotools_does(gt):
    """A result on a crowd region (iscrowd 1) is neither a false positive nor classified, and a
    result on an image without persons is a false positive; the metrics are pycocotools'."""
    crowd = _person(3, 2, LARGE_BOX)
    crowd["iscrowd"] = 1
    gt = _coco([1, 2, 3], gt["annotations"] + [crowd])
    results = _perfect(gt)[:2] + [_result(crowd["keypoints"], 2, 0.9), _result(crowd["keypoints"], 3, 0.8)]
    analysis = analyze_keypoint_results(gt, results)
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType="keypoints")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert list(analysis.metrics.values()) == list(coco_eval.stats)
    assert analysis.matched == {0: 1, 1: 2}
    assert analysis.num_background_fp == 1 and analysis.num_false_negatives == 0
    assert analysis.ap_mean[STAGES.index("BckgFP")] == pytest.approx(1.0)


def test_wrong_number_of_sigmas_raises(gt):
    with pytest.raises(ValueError, match="16 OKS sigmas for 17 keypoints"):
        analyze_keypoint_results(gt, _perfect(gt), sigmas=list(SIGMAS[:16]))


def test_other_17_keypoints_need_their_sigmas(gt):
    # before: a ground truth of 17 keypoints that are not COCO's (an animal's, or COCO's renamed or
    # reordered) was scored with COCO's person sigmas without a word; other counts already raised
    animal = copy.deepcopy(gt)
    animal["categories"][0]["keypoints"] = [f"point_{k}" for k in range(17)]
    results = _edit_large(gt, _invert_wrists)
    with pytest.raises(ValueError, match=r"keypoints \['point_0', .*'point_16'\] are not COCO's 17 person keypoints"):
        analyze_keypoint_results(animal, results)
    sigmas = [0.05] * 17
    assert (
        analyze_keypoint_results(animal, results, sigmas).metrics
        == analyze_keypoint_results(gt, results, sigmas).metrics
    )
    reordered = copy.deepcopy(gt)
    reordered["categories"][0]["keypoints"] = list(COCO_PERSON_KEYPOINT_NAMES[::-1])
    with pytest.raises(ValueError, match="are not COCO's 17 person keypoints"):
        analyze_keypoint_results(reordered, results)


def test_results_are_not_modified(gt):
    results = _edit_large(gt, _invert_wrists)
    before = copy.deepcopy(results)
    analyze_keypoint_results(gt, results)
    assert results == before


def cli_case_with_baseline(tmp_path):
    """Writes a random case's gt and results; returns (gt, the tool's arguments with the gt as
    the baseline's training set, the output folder)."""
    gt, results = _random_case(np.random.default_rng(4))
    paths = {name: tmp_path / f"{name}.json" for name in ("gt", "results")}
    paths["gt"].write_text(json.dumps(gt))
    paths["results"].write_text(json.dumps(results))
    out = tmp_path / "analysis"
    args = ["--gt", str(paths["gt"]), "--results", str(paths["results"]), "--output", str(out)]
    return gt, args + ["--baseline-train-gt", str(paths["gt"])], out


def test_cli_reports_the_mean_pose_baseline(tmp_path, capsys):
    from depotr.evaluation.baselines import mean_pose_baseline_metrics

    gt, args, out = cli_case_with_baseline(tmp_path)
    assert _tool().main(args) == 0
    baseline = json.loads((out / "mean_pose_baseline.json").read_text())
    assert baseline == pytest.approx(mean_pose_baseline_metrics(gt, gt))
    assert f"mean-pose baseline (no model): AP {baseline['AP']:.1f}" in capsys.readouterr().out
    assert _tool().main(args[:-1] + [str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_cli_takes_its_defaults_from_a_finished_run(tmp_path, capsys):
    """--config-file: the gt of DATASETS.TEST[0] and the results of OUTPUT_DIR/inference."""
    from detectron2.data import MetadataCatalog

    from depotr.data.datasets import register_default_synthetic_datasets

    config = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
    opts = [
        "OUTPUT_DIR",
        str(tmp_path / "run"),
        "DATASETS.SYNTHETIC.ROOT",
        str(tmp_path / "data"),
        "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES",
        "4",
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES",
        "3",
    ]
    try:
        # No results yet: the error names the file the run should have written.
        assert _tool().main(["--config-file", config] + opts) == 1
        expected = tmp_path / "run" / "inference" / "synthetic_persons_val" / "coco_instances_results.json"
        assert str(expected) in capsys.readouterr().err
        gt = json.loads(open(MetadataCatalog.get("synthetic_persons_val").json_file).read())
        results = [
            _result(
                np.concatenate([np.asarray(a["keypoints"], float).reshape(17, 3)[:, :2], np.ones((17, 1))], 1),
                a["image_id"],
                1.0,
            )
            for a in gt["annotations"]
        ]
        expected.parent.mkdir(parents=True)
        expected.write_text(json.dumps(results))
        assert _tool().main(["--config-file", config] + opts) == 0
        metrics = json.loads((tmp_path / "run" / "analysis" / "metrics.json").read_text())
        assert metrics["AP"] > 0.9  # the ground truth itself (unlabelled keypoints aside)
        assert (tmp_path / "run" / "analysis" / "mean_pose_baseline.json").is_file()
    finally:
        register_default_synthetic_datasets()


def test_cli_takes_a_custom_skeletons_mirror_from_the_runs_config(tmp_path, capsys):
    """A run on a custom dataset (registered by the user's script, not in the tool's process):
    its config.yaml gives the flip pairs, so swapped hands count as an inversion, not a miss."""
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config

    names = ["head", "left_hand", "right_hand"]
    gt = {
        "images": [{"id": 1, "file_name": "1.png", "height": 200, "width": 200}],
        "categories": [{"id": 3, "name": "kite", "keypoints": names, "skeleton": []}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "bbox": [40, 40, 100, 100],
                "area": 10000.0,
                "num_keypoints": 3,
                "keypoints": [90, 50, 2, 50, 120, 2, 130, 120, 2],
            }
        ],
    }
    swapped = [{"image_id": 1, "category_id": 3, "score": 0.9, "keypoints": [90, 50, 1, 130, 120, 1, 50, 120, 1]}]
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = 3
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = names
    cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = [["left_hand", "right_hand"]]
    cfg.TEST.KEYPOINT_OKS_SIGMAS = [0.05, 0.05, 0.05]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("kites_train_unregistered",), ("kites_val_unregistered",)
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(swapped))
    files = ["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "results.json")]
    argv = ["--config-file", str(config), *files, "--output", str(tmp_path / "out")]
    assert _tool().main(argv) == 0
    counts = json.loads((tmp_path / "out" / "error_breakdown.json").read_text())["keypoint_counts"]
    assert counts["inversion"] == 2 and counts["miss"] == 0 and counts["good"] == 1
    with pytest.raises(SystemExit):
        _tool().main(["--config-file", str(config), "--output", str(tmp_path / "out2")])
    assert "a custom dataset needs --gt" in capsys.readouterr().err


def test_ground_truth_images_without_results_are_counted_logged_and_printed(tmp_path, gt, capsys, caplog):
    # Results of image 1 only: image 2's person was a miss (FN) without a word.
    two_images = _coco(
        [1, 2], gt["annotations"] + [_person(3, 2, LARGE_BOX), {**_person(4, 2, MEDIUM_BOX), "iscrowd": 1}]
    )
    with caplog.at_level("WARNING", logger="depotr.evaluation.error_analysis"):
        analysis = analyze_keypoint_results(two_images, _perfect(gt))
    assert (analysis.num_images, analysis.num_images_without_results, analysis.num_false_negatives) == (2, 1, 1)
    warning = "1 of 2 ground-truth images have no result: their 1 annotated persons count as misses (false negatives)"
    assert warning in caplog.text
    assert analyze_keypoint_results(gt, _perfect(gt)).num_images_without_results == 0

    (tmp_path / "gt.json").write_text(json.dumps(two_images))
    (tmp_path / "results.json").write_text(json.dumps(_perfect(gt)))
    argv = ["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "results.json"), "--output", str(tmp_path)]
    assert _tool().main(argv) == 0
    line = "Ground-truth images without any result: 1 of 2 (their persons count as misses, FN)."
    assert line in capsys.readouterr().out and line in (tmp_path / "error_breakdown.md").read_text()
    breakdown = json.loads((tmp_path / "error_breakdown.json").read_text())
    assert (breakdown["num_images"], breakdown["num_images_without_results"]) == (2, 1)


def _crash_in_savefig(monkeypatch):
    from matplotlib.figure import Figure

    def crash(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", crash)


def _crash_in_a_table(monkeypatch):
    # A name that cannot be encoded: the write of bins.md fails once the file is open.
    return {"size": {"\udc80": {"persons": 1, "AP": 50.0, "keypoints": 0}}}


@pytest.mark.parametrize("crash", [_crash_in_savefig, _crash_in_a_table], ids=["plot", "table"])
def test_a_crash_while_writing_the_report_leaves_the_previous_files_whole(tmp_path, gt, monkeypatch, crash):
    from depotr.evaluation.error_report import write_report

    analysis = analyze_keypoint_results(gt, _perfect(gt))
    bins = {"size": {"small": {"persons": 1, "AP": 100.0, "keypoints": 0}}}
    write_report(analysis, str(tmp_path), bins)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    crashed_bins = crash(monkeypatch) or bins
    with pytest.raises((OSError, UnicodeEncodeError)):
        write_report(analyze_keypoint_results(gt, _edit_large(gt, _jitter_all)), str(tmp_path), crashed_bins)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary file left
    for name in ("pr_curves.png", "error_breakdown.png", "bins.md"):
        assert after[name] == before[name], name  # the previous file, not a truncated one


def test_swapped_keypoints_named_l_and_r_are_an_inversion_without_a_config():
    # AP-10K-style names: without a config only the table's left_/right_ names were paired, so swapped
    # L_Paw / R_Paw counted as misses and the Inversion class stayed 0 without a word.
    names = ["nose", "L_Paw", "R_Paw"]
    gt = _coco(
        [1], [{**_person(1, 1, LARGE_BOX), "keypoints": [90, 80, 2, 60, 300, 2, 160, 300, 2], "num_keypoints": 3}]
    )
    gt["categories"][0]["keypoints"] = names
    swapped = [{"image_id": 1, "category_id": 1, "score": 0.9, "keypoints": [90, 80, 1, 160, 300, 1, 60, 300, 1]}]
    labels = analyze_keypoint_results(gt, swapped, sigmas=[0.05] * 3).keypoint_labels
    assert labels[0].tolist() == [GOOD, INVERSION, INVERSION]
