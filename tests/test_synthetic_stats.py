"""benchmarks/synthetic_stats.py: the COCO-vs-synthetic statistics, on hand-made annotations."""

import json

import numpy as np
import pytest

from tests.conftest import load_script


def _stats_module():
    return load_script("benchmarks/synthetic_stats.py")


def _person(ann_id, image_id, box, v):
    """A person whose 17 keypoints lie on the diagonal of ``box`` with flags ``v`` (17,)."""
    x, y, w, h = box
    t = np.linspace(0.1, 0.9, 17)
    kp = np.stack([x + t * w, y + t * h, np.asarray(v, float)], 1) * (np.asarray(v)[:, None] > 0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "bbox": list(box),
        "area": w * h,
        "keypoints": kp.ravel().tolist(),
        "num_keypoints": int((np.asarray(v) > 0).sum()),
        "iscrowd": 0,
    }


@pytest.fixture
def dataset():
    """Image 1 (100 x 100): two persons with identical boxes (IoU 1, each box holds all 17 of the
    other's keypoints: crowd index 1). Image 2: one person at the border with 7 keypoints v = 1
    and 2 unlabelled. Image 3: only an unlabelled person (not counted)."""
    all_visible = np.full(17, 2)
    partly = np.array([2] * 8 + [1] * 7 + [0] * 2)
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
        "annotations": [
            _person(1, 1, (10, 10, 40, 40), all_visible),  # area 1600: medium
            _person(2, 1, (10, 10, 40, 40), all_visible),
            _person(3, 2, (0, 20, 20, 30), partly),  # area 600: small, touching x = 0
            _person(4, 3, (30, 30, 10, 10), np.zeros(17)),
        ],
    }


def test_statistics_by_hand(dataset):
    stats = _stats_module().dataset_statistics(dataset)
    assert stats["images with persons"] == 2 and stats["persons (num_keypoints > 0)"] == 3
    assert stats["persons per image"] == pytest.approx(1.5)
    assert stats["images with 1 person %"] == pytest.approx(50.0) and stats["images with 4+ persons %"] == 0
    assert stats["small persons %"] == pytest.approx(100 / 3) and stats["medium persons %"] == pytest.approx(200 / 3)
    assert stats["labelled keypoints per person"] == pytest.approx((17 + 17 + 15) / 3)
    assert stats["keypoints v=1 %"] == pytest.approx(100 * 7 / 51)
    assert stats["keypoints v=0 %"] == pytest.approx(100 * 2 / 51)
    assert stats["occluded among labelled (v=1 / v>0) %"] == pytest.approx(100 * 7 / 49)
    assert stats["boxes touching the border %"] == pytest.approx(100 / 3)
    # Image crowd indices: 1.0 (hard) and 0.0 (easy).
    assert stats["image crowd index mean"] == pytest.approx(0.5)
    assert stats["images crowd index > 0.8 (hard) %"] == pytest.approx(50.0)
    assert stats["images crowd index <= 0.1 (easy) %"] == pytest.approx(50.0)
    assert stats["persons with max box IoU > 0.5 %"] == pytest.approx(200 / 3)
    assert stats["images with a box pair IoU > 0.1 %"] == pytest.approx(50.0)
    assert "truncated (generator's flag) %" not in stats


def test_cli_on_a_json_and_on_a_synthetic_split(tmp_path, dataset, capsys):
    module = _stats_module()
    gt, out = tmp_path / "gt.json", tmp_path / "stats.json"
    gt.write_text(json.dumps(dataset))
    assert module.main(["--gt", str(gt), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["statistics"]["persons per image"] == pytest.approx(1.5)
    assert "| persons per image | 1.50 |" in capsys.readouterr().out
    assert module.main(["--version", "4", "--num-images", "3", "--image-size", "128", "--json", str(out)]) == 0
    stats = json.loads(out.read_text())["statistics"]
    assert stats["persons (num_keypoints > 0)"] >= 3 and "truncated (generator's flag) %" in stats
    gt.write_text(json.dumps({**dataset, "annotations": dataset["annotations"][3:]}))
    assert module.main(["--gt", str(gt)]) == 1
    assert "nothing to count" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, error",
    [
        (None, "COCO keypoints file not found"),
        ("nope", "is not valid json"),
        ('{"annotations": []}', "expected a COCO dict with the lists 'images' and 'annotations'"),
        ('{"images": [{"id": 1}], "annotations": []}', "an entry of 'images' has no 'width'"),
        (
            json.dumps({"images": [], "annotations": [_person(5, 9, (0, 0, 10, 10), np.full(17, 2))]}),
            "annotation 5: image_id 9 is not in 'images'",
        ),
    ],
)
def test_cli_names_the_file_and_the_problem_of_a_bad_json(tmp_path, capsys, content, error):
    """A missing, unparsable or non-COCO --gt file is one line naming it (was a traceback)."""
    gt = tmp_path / "gt.json"
    if content is not None:
        gt.write_text(content)
    assert _stats_module().main(["--gt", str(gt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"synthetic_stats: {gt}: ") and error in err and len(err.strip().splitlines()) == 1
