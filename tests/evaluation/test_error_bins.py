"""Per-bin analysis (size, truncation, occlusion, crowd): the persons' bins from COCO fields
(depotr.data.person_bins) and the AP / keypoint classes per bin (analyze_bins, analyze_results.py)
on hand-made ground truth."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from depotr.data.person_bins import person_bins
from depotr.evaluation.error_analysis import analyze_bins, analyze_keypoint_results

from .test_error_analysis import LARGE_BOX, MEDIUM_BOX, _coco, _person, _result, _tool, cli_case_with_baseline

SMALL_BOX = (0.0, 300.0, 20.0, 40.0)  # area 800, touching the left border of the 640 x 480 image


@pytest.fixture
def gt():
    """One image: a large person, a medium one inside the large one's box with 5 of its 17
    keypoints occluded (v = 1), a small one at the border."""
    medium_box = (60.0, 100.0) + MEDIUM_BOX[2:]
    visibility = np.full(17, 2.0)
    visibility[:5] = 1
    return _coco([1], [_person(1, 1, LARGE_BOX), _person(2, 1, medium_box, visibility), _person(3, 1, SMALL_BOX)])


def test_bins_from_coco_fields(gt):
    bins = person_bins(gt)
    assert [bins[i]["size"] for i in (1, 2, 3)] == ["large", "medium", "small"]
    assert [bins[i]["truncation"] for i in (1, 2, 3)] == ["whole", "whole", "truncated"]
    assert [bins[i]["occlusion"] for i in (1, 2, 3)] == ["light", "moderate", "light"]  # 5 / 17 = 0.29
    # The large box holds all 17 keypoints of the medium person (17 / 17 = 1.0: hard); the medium
    # box holds the large person's keypoints that fall inside it.
    large = np.asarray(gt["annotations"][0]["keypoints"]).reshape(17, 3)
    x, y, w, h = gt["annotations"][1]["bbox"]
    inside = ((large[:, 0] >= x) & (large[:, 0] <= x + w) & (large[:, 1] >= y) & (large[:, 1] <= y + h)).sum()
    assert bins[1]["crowd"] == "hard" and bins[3]["crowd"] == "easy"
    assert bins[2]["crowd"] == ("easy" if inside / 17 <= 0.1 else "medium" if inside / 17 <= 0.8 else "hard")
    gt["annotations"][2]["synthetic"] = {"truncated": False}  # the generator's flag wins
    assert person_bins(gt)[3]["truncation"] == "whole"


def test_ap_and_classes_per_bin(gt):
    """Perfect results for the large and the small person; for the medium one all keypoints at
    the bottom-right corner of its box (OKS < 0.1: unmatched, meant for it by the box rule)."""
    annotations = gt["annotations"]
    wrong = np.asarray(annotations[1]["keypoints"], float).reshape(17, 3)
    x, y, w, h = annotations[1]["bbox"]
    wrong[:, :2] = [x + w, y + h]
    results = [_result(annotations[0]["keypoints"]), _result(wrong), _result(annotations[2]["keypoints"])]
    analysis = analyze_keypoint_results(gt, results)
    bins = analyze_bins(gt, results, analysis, baseline_results=[_result(a["keypoints"]) for a in annotations])
    size = bins["size"]
    assert [size[b]["persons"] for b in ("small", "medium", "large")] == [1, 1, 1]
    assert size["large"]["AP"] == pytest.approx(100.0) and size["small"]["AP"] == pytest.approx(100.0)
    assert size["medium"]["AP"] == pytest.approx(0.0)
    assert all(row["baseline_AP"] == pytest.approx(100.0) for row in size.values())
    assert size["large"]["good"] == 100.0 and size["large"]["keypoints"] == 17
    assert size["medium"]["keypoints"] == 0  # the wrong result matches no person: no classes
    assert bins["truncation"]["truncated"]["persons"] == 1 and bins["truncation"]["truncated"]["AP"] == pytest.approx(
        100.0
    )
    assert bins["occlusion"]["heavy"] == {
        "persons": 0,
        "AP": None,
        "keypoints": 0,
        **{c: 0.0 for c in ("good", "jitter", "inversion", "swap", "miss")},
    }


def _pycocotools_ap(gt, results):
    """AP (%) of a plain pycocotools run."""
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType="keypoints")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return 100.0 * coco_eval.stats[0]


def test_bin_ap_is_pycocotools_on_the_images_of_the_bin():
    """Image 1: a small person; image 2: a large one and, scoring higher, a background false
    positive inside no box. Each bin's AP is a plain pycocotools run on its own image (before, the
    false positive of image 2 counted in every bin: small AP 50 instead of 100)."""
    small, large = _person(1, 1, SMALL_BOX), _person(2, 2, LARGE_BOX)
    background = np.asarray(small["keypoints"], float).reshape(17, 3)
    background[:, :2] += [500.0, -200.0]  # far from both boxes
    results = [
        _result(small["keypoints"], 1, 0.5),
        _result(large["keypoints"], 2, 0.5),
        _result(background, 2, 0.9),
    ]
    gt = _coco([1, 2], [small, large])
    bins = analyze_bins(gt, results, analyze_keypoint_results(gt, results))
    for name, image_id, ann in (("small", 1, small), ("large", 2, large)):
        image_gt = {**gt, "images": [i for i in gt["images"] if i["id"] == image_id], "annotations": [ann]}
        expected = _pycocotools_ap(image_gt, [r for r in results if r["image_id"] == image_id])
        assert bins["size"][name]["AP"] == pytest.approx(expected), name
    assert bins["size"]["small"]["AP"] == pytest.approx(100.0) and bins["size"]["large"]["AP"] < 100.0


def test_cli_writes_the_bins_table(tmp_path, capsys):
    gt, args, out = cli_case_with_baseline(tmp_path)
    assert _tool().main(args) == 0
    bins = json.loads((out / "bins.json").read_text())
    assert set(bins) == {"size", "truncation", "occlusion", "crowd"}
    total = sum(a["num_keypoints"] > 0 for a in gt["annotations"])
    assert all(sum(row["persons"] for row in rows.values()) == total for rows in bins.values())
    assert all("baseline_AP" in row for rows in bins.values() for row in rows.values() if row["persons"])
    table = (out / "bins.md").read_text()
    assert "| attribute | bin | persons | AP | mean-pose AP |" in table and table in capsys.readouterr().out + "\n"


def test_an_image_without_its_size_is_named(gt):
    # before: a KeyError 'width' traceback out of analyze_results.py
    del gt["images"][0]["width"]
    with pytest.raises(ValueError, match="ground-truth image 1 has no 'width' and 'height'"):
        person_bins(gt)
