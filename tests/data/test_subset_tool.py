"""Representative subsets (tools/make_subset.py, depotr.data.subset)."""

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest

import depotr.data.subset
from depotr.cli import ConfigError, run_main
from depotr.data.subset import select_subset, subset_coco, visibility_distribution
from depotr.data.synthetic import coco_categories
from tests.conftest import REPO, load_script

K = 17
NOSE_CATEGORY = '"categories": [{"id": 1, "name": "person", "keypoints": ["nose"]}]'  # a json member


def _random_coco(num_images=1500, seed=0):
    """A COCO keypoints json with 0-4 persons per image, per-keypoint visibility rates that
    vary by keypoint, and some crowd annotations."""
    rng = np.random.default_rng(seed)
    p_vis = rng.uniform(0.3, 0.8, K)
    p_occ = rng.uniform(0.05, 0.2, K)
    images, annotations = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 100, "width": 100})
        for _ in range(int(rng.integers(0, 5))):
            u = rng.random(K)
            v = np.where(u < p_vis, 2, np.where(u < p_vis + p_occ, 1, 0))
            kps = np.stack([rng.uniform(0, 99, K) * (v > 0), rng.uniform(0, 99, K) * (v > 0), v], 1)
            crowd = int(rng.random() < 0.03)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": crowd,
                    "bbox": [0, 0, 10, 10],
                    "area": 100.0,
                    "keypoints": np.round(kps * (1 - crowd), 1).reshape(-1).tolist(),
                    "num_keypoints": int((v > 0).sum()) * (1 - crowd),
                }
            )
    return {"info": {}, "images": images, "annotations": annotations, "categories": coco_categories()}


@pytest.fixture(scope="module")
def coco():
    return _random_coco()


@pytest.mark.parametrize("fraction", [0.1, 0.25], ids=["10pct", "25pct"])
def test_subset_keeps_visibility_shares_within_1pp(coco, fraction):
    ids = select_subset(coco, fraction, seed=1)
    assert len(ids) == round(fraction * len(coco["images"])) and len(set(ids)) == len(ids)
    sub = subset_coco(coco, ids)
    dev = np.abs(visibility_distribution(coco) - visibility_distribution(sub)).max() * 100
    assert dev < 1.0
    assert {a["image_id"] for a in sub["annotations"]} <= set(ids)
    assert sub["categories"] == coco["categories"]


def test_subset_is_deterministic_for_a_seed(coco):
    assert select_subset(coco, 0.1, seed=3) == select_subset(coco, 0.1, seed=3)
    assert select_subset(coco, 0.1, seed=3) != select_subset(coco, 0.1, seed=4)


def test_distribution_rows_sum_to_one(coco):
    dist = visibility_distribution(coco)
    assert dist.shape == (K, 3)
    np.testing.assert_allclose(dist.sum(1), 1.0)


def test_a_single_category_is_used_whatever_its_name(coco):
    star = {**coco, "categories": [{**coco["categories"][0], "name": "star"}]}  # a custom dataset's one class
    assert select_subset(star, 0.1, seed=3) == select_subset(coco, 0.1, seed=3)
    np.testing.assert_array_equal(visibility_distribution(star), visibility_distribution(coco))


def test_impossible_subset_raises_clear_error():
    coco = _random_coco(num_images=2)
    coco["annotations"] = [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "keypoints": [1, 1, 2] * K},
        {"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 0, "keypoints": [0, 0, 0] * K},
    ]
    with pytest.raises(ValueError, match="no subset of 1 of 2 images keeps the visibility shares within 1.0 pp"):
        select_subset(coco, 0.5)


def test_a_malformed_json_is_a_config_error_naming_the_field(coco):
    bad = {**coco, "annotations": [{**coco["annotations"][0], "iscrowd": 0, "keypoints": [None] * (3 * K)}]}
    with pytest.raises(ConfigError, match=r"^annotations\[0\] \(id 1\): field 'keypoints' is \[None, "):
        select_subset(bad, 0.5)


def test_annotations_of_no_image_are_counted_in_a_warning(caplog):
    coco = _random_coco(num_images=20)
    orphan = {**coco["annotations"][0], "id": 9000, "image_id": 999}  # an integer id no image has
    with_orphans = {**coco, "annotations": coco["annotations"] + [orphan, {**orphan, "id": 9001}]}
    with caplog.at_level(logging.WARNING, logger="depotr.data.subset"):
        ids = select_subset(with_orphans, 0.5, tolerance_pp=100)
    n = len(with_orphans["annotations"])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"2 of {n} annotations name an image_id that no image of the json has (first: annotations[{n - 2}], "
        "image_id 999); they are left out of the visibility shares and of the subset."
    ]
    assert ids == select_subset(coco, 0.5, tolerance_pp=100)  # the shares without them
    assert 999 not in {a["image_id"] for a in subset_coco(with_orphans, ids)["annotations"]}


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1], ids=["zero", "above_one", "negative"])
def test_invalid_fraction(coco, fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        select_subset(coco, fraction)


def _tool():
    return load_script("tools/make_subset.py")


def test_cli_writes_subset_json_and_png(tmp_path, coco):
    tool = _tool()
    src = tmp_path / "full.json"
    src.write_text(json.dumps(coco))
    out, png = tmp_path / "subset.json", tmp_path / "subset.png"
    assert (
        tool.main(["--input", str(src), "--fraction", "0.1", "--output", str(out), "--plot", str(png), "--seed", "2"])
        == 0
    )
    sub = json.loads(out.read_text())
    assert len(sub["images"]) == 150
    dev = np.abs(visibility_distribution(coco) - visibility_distribution(sub)).max() * 100
    assert dev < 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [', r"full\.json is not valid json: Expecting value: line 1"),
        ('{"categories": [{"id": 1, "name": "person", "keypoints": ["nose"]}]}', r"full\.json: no 'images' field"),
        (None, r"cannot read .*full\.json: No such file"),
        (
            '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}',
            r"full\.json: the json has 2 categories \['cat', 'dog'\] and none named 'person'",
        ),
        ("[]", r"full\.json: holds a json list, expected an object with images, annotations, categories"),
        # Was "string indices must be integers", naming no field.
        (
            '{"images": {"id": 1}, "annotations": [], ' + NOSE_CATEGORY + "}",
            r"full\.json: field 'images' is a json object, expected a list of objects$",
        ),
        (
            '{"images": [{"id": 1}], "annotations": [{"image_id": 1, "category_id": 1}, 5], ' + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[1\] is a json int, expected an object$",
        ),
        # Passed unnoticed (the visibility read from a string compared unequal to 1 and 2: v = 0).
        (
            '{"images": [{"id": 1}], "annotations": [{"id": 8, "image_id": 1, "category_id": 1, "keypoints": '
            '["3", 4, 2]}], ' + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[0\] \(id 8\): field 'keypoints' is \['3', 4, 2\], expected 3 finite "
            r"numbers \(x, y, v for 1 keypoints\)$",
        ),
        # Dropped without a word (no image has the id "2"); load_keypoint_json's rule and message.
        (
            '{"images": [{"id": 2}], "annotations": [{"id": 8, "image_id": "2", "category_id": 1, "keypoints": '
            "[3, 4, 2]}], " + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[0\] \(id 8\): field 'image_id' is '2', expected an integer$",
        ),
        # Left out of the visibility shares (category "1" is not 1), yet written to the subset.
        (
            '{"images": [{"id": 1}, {"id": 2}], "annotations": [{"id": 8, "image_id": 1, "category_id": 1, '
            '"keypoints": [3, 4, 2]}, {"id": 9, "image_id": 2, "category_id": "1", "keypoints": [3, 4, 1]}], '
            + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[1\] \(id 9\): field 'category_id' is '1', expected an integer$",
        ),
        (
            '{"images": [{"id": 1}], "annotations": [{"id": 8, "image_id": 1, "keypoints": [3, 4, 2]}], '
            + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[0\] \(id 8\) is missing field\(s\) \['category_id'\]$",
        ),
        # Counted as a crowd ("0" is truthy), yet written to the subset.
        (
            '{"images": [{"id": 1}], "annotations": [{"id": 8, "image_id": 1, "category_id": 1, "iscrowd": "0", '
            '"keypoints": [3, 4, 2]}], ' + NOSE_CATEGORY + "}",
            r"full\.json: annotations\[0\] \(id 8\): field 'iscrowd' is '0', expected 0 or 1 \(or false / true\)$",
        ),
    ],
    ids=["truncated", "not-coco", "missing", "two-categories-no-person", "list", "images-object",
         "annotation-not-object", "keypoint-string", "image-id-string", "category-id-string",
         "category-id-missing", "iscrowd-string"],
)  # fmt: skip
def test_cli_names_the_input_it_cannot_use(tmp_path, capsys, content, message):
    src = tmp_path / "full.json"
    if content is not None:
        src.write_text(content)
    argv = ["--input", str(src), "--fraction", "0.1", "--output", str(tmp_path / "subset.json")]
    assert run_main(_tool().main, argv) == 2  # as every tool: one "error:" line, status 2, no traceback
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and re.match(r"error: ", error), error
    assert re.search(message, error.strip()), error
    assert not (tmp_path / "subset.json").exists()


def test_the_tool_prints_no_third_party_warnings(tmp_path):
    # Its module-level Detectron2 import printed torch's FutureWarning before main ran.
    src = tmp_path / "full.json"
    src.write_text(json.dumps(_random_coco(num_images=20)))
    argv = ["--input", str(src), "--fraction", "0.5", "--output", str(tmp_path / "sub.json"), "--tolerance", "100"]
    done = subprocess.run([sys.executable, f"{REPO}/tools/make_subset.py", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "output, plot, message",
    [
        (
            "missing/subset.json",
            "subset.png",
            r"--output \S*missing/subset\.json: its folder \S*missing does not exist",
        ),
        ("subset.json", "missing/subset.png", r"--plot \S*missing/subset\.png: its folder \S*missing does not exist"),
        ("subset.json", "subset.bmp", r"--plot \S*subset\.bmp: the extension 'bmp' is not a matplotlib format \(.*png"),
        ("subset.json", "subset", r"--plot \S*subset: the extension '\(none\)' is not a matplotlib format"),
    ],
    ids=["output-folder", "plot-folder", "plot-extension", "plot-no-extension"],
)
def test_cli_checks_both_outputs_before_selecting(tmp_path, capsys, monkeypatch, output, plot, message):
    tool = _tool()
    monkeypatch.setattr(
        depotr.data.subset, "select_subset", lambda *a, **k: pytest.fail("selected before checking the outputs")
    )
    src = tmp_path / "full.json"
    src.write_text(json.dumps(_random_coco(num_images=20)))
    argv = [
        "--input",
        str(src),
        "--fraction",
        "0.5",
        "--output",
        str(tmp_path / output),
        "--plot",
        str(tmp_path / plot),
    ]
    with pytest.raises(SystemExit):
        tool.main(argv)
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json"]


def test_cli_writes_neither_output_when_the_plot_fails(tmp_path, coco, monkeypatch):
    tool = _tool()

    def failing_plot(*args, **kwargs):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(depotr.data.subset, "plot_visibility_distributions", failing_plot)
    src = tmp_path / "full.json"
    src.write_text(json.dumps(coco))
    argv = [
        "--input",
        str(src),
        "--fraction",
        "0.1",
        "--output",
        str(tmp_path / "sub.json"),
        "--plot",
        str(tmp_path / "sub.png"),
    ]
    with pytest.raises(RuntimeError, match="the plot failed"):
        tool.main(argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.json"]  # no json, no temporary file
