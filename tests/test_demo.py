"""demo/demo.py end to end: real photos from scikit-image in several layouts (plus an unreadable
file), --save-json, --confidence-threshold, a video and a missing video.

One run goes through a subprocess (the script as users run it); the others call its ``main``
in this process, which saves loading torch and Detectron2 again."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from detectron2.structures import Boxes, Instances

from depotr import Predictor
from depotr.cli import run_main
from depotr.config import load_depotr_config
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_OKS_SIGMAS
from depotr.tracking import PoseTracker
from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "demo", "demo.py")
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
CPU = ["--random-weights", "--opts", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def demo():
    return load_script(DEMO)


def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])  # (512, 512, 3)


@pytest.mark.slow
def test_demo_draws_photos_of_every_layout_saves_json_and_reports_unreadable_ones(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bgr = astronaut_bgr()
    layouts = {
        "astronaut": bgr,
        "camera": skimage_data.camera(),  # a 1-channel PNG
        "astronaut16": bgr.astype(np.uint16) * 257,  # a 16-bit PNG of the same picture
        "astronaut_rgba": np.concatenate([bgr, np.full((512, 512, 1), 200, np.uint8)], axis=2),
    }
    for name, image in layouts.items():
        assert cv2.imwrite(str(inputs / f"{name}.png"), image)
    assert cv2.imread(str(inputs / "camera.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    (inputs / "broken.jpg").write_bytes(b"not a jpeg")
    results_json = tmp_path / "results" / "keypoints.json"
    completed = subprocess.run(
        [
            sys.executable,
            DEMO,
            "--config-file",
            INSTANT_CONFIG,
            "--input",
            str(inputs),
            "--output",
            str(tmp_path / "out"),
            "--save-json",
            str(results_json),
            *CPU,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "skipping" in completed.stderr and "broken.jpg" in completed.stderr
    assert "1 image(s) were skipped or could not be read" in completed.stderr
    for name in layouts:
        assert f"{name}.png -> " in completed.stdout
        drawn = cv2.imread(str(tmp_path / "out" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert drawn is not None and drawn.shape == (512, 512, 3)  # drawn at the input size, in colour
    assert not np.array_equal(cv2.imread(str(tmp_path / "out" / "astronaut.png")), bgr)  # a person was drawn
    assert ": 1 persons" in completed.stdout  # no detector configured: the whole image is the person

    results = json.loads(results_json.read_text())
    assert sorted(r["image_id"] for r in results) == sorted(layouts)  # the file name stems
    for r in results:
        assert r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3
        assert r["bbox"] == [0.0, 0.0, 512.0, 512.0] and isinstance(r["score"], float)
        assert all(np.isfinite(r["keypoints"]))
    by_id = {r["image_id"]: r for r in results}
    for variant in ("astronaut16", "astronaut_rgba"):  # converted to the very same picture
        assert by_id[variant]["keypoints"] == by_id["astronaut"]["keypoints"]
        assert by_id[variant]["score"] == by_id["astronaut"]["score"]


def test_confidence_threshold_above_every_score_writes_the_image_unchanged(demo, tmp_path, capsys):
    image = astronaut_bgr()[::4, ::4].copy()
    cv2.imwrite(str(tmp_path / "000000000042.png"), image)
    results_json = tmp_path / "keypoints.json"
    status = demo.main(
        [
            "--config-file",
            INSTANT_CONFIG,
            "--input",
            str(tmp_path / "*.png"),
            "--output",
            str(tmp_path / "out"),
            "--confidence-threshold",
            "1.01",
            "--save-json",
            str(results_json),
            *CPU,
        ]
    )
    assert status == 0
    assert ": 0 persons" in capsys.readouterr().out
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "000000000042.png")), image)
    assert json.loads(results_json.read_text()) == []

    demo.main(
        [
            "--config-file",
            INSTANT_CONFIG,
            "--input",
            str(tmp_path / "000000000042.png"),
            "--output",
            str(tmp_path / "out"),
            "--save-json",
            str(results_json),
            *CPU,
        ]
    )
    assert [r["image_id"] for r in json.loads(results_json.read_text())] == [42]  # a COCO-style id


def write_video(path, frames, fps=10.0, fourcc="mp4v"):
    h, w = frames[0].shape[:2] if frames else (64, 64)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def walk_frames(n=5):
    return [np.roll(astronaut_bgr()[::4, ::4], 8 * i, axis=1) for i in range(n)]  # 128 x 128


def test_video_gives_an_mp4_with_every_frame(demo, tmp_path):
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(5))
    results_json = tmp_path / "keypoints.json"
    status = demo.main(
        [
            "--config-file",
            INSTANT_CONFIG,
            "--video-input",
            str(video),
            "--output",
            str(tmp_path / "out"),
            "--save-json",
            str(results_json),
            *CPU,
        ]
    )
    assert status == 0
    read = read_video(tmp_path / "out" / "walk.mp4")
    assert len(read) == 5 and all(f.shape == (128, 128, 3) for f in read)
    assert [r["image_id"] for r in json.loads(results_json.read_text())] == [0, 1, 2, 3, 4]  # frame indices


def test_missing_inputs_are_errors_naming_them_and_make_no_output_folder(demo, tmp_path, capsys, no_model):
    # before: "cannot open" (not saying the file is missing), and the --output folder was made
    missing = tmp_path / "no_such_video.mp4"
    json_file = tmp_path / "j" / "k.json"
    assert run(demo, "--video-input", missing, "--output", tmp_path / "new", "--save-json", json_file) == 1
    assert f"error: --video-input {missing} does not exist" in capsys.readouterr().err
    assert run(demo, "--video-input", tmp_path, "--output", tmp_path / "new") == 1
    assert f"error: --video-input {tmp_path} is a folder, not a video file" in capsys.readouterr().err
    assert run(demo, "--input", tmp_path / "no_such.jpg", "--output", tmp_path / "new") == 1
    assert f"error: input {tmp_path / 'no_such.jpg'} does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    assert run(demo, "--video-input", broken, "--output", tmp_path / "new") == 1
    assert f"error: cannot open {broken}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["broken.mp4"]  # no folder made


@pytest.mark.parametrize(
    "names",
    [("a/person.jpg", "b/person.jpg"), ("person.jpg", "person.png"), ("7.png", "007.png")],
    ids=["same-name-two-folders", "same-stem", "same-image-id"],
)
def test_inputs_sharing_an_output_or_image_id_are_refused_before_any_work(demo, tmp_path, capsys, names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(tmp_path / name), astronaut_bgr()[::8, ::8])
    status = demo.main(
        [
            "--config-file",
            INSTANT_CONFIG,
            "--input",
            *(str(tmp_path / n) for n in names),
            "--output",
            str(tmp_path / "out"),
            *CPU,
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "would share" in err and all(str(tmp_path / n) in err for n in names)
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_output_with_an_image_extension_is_the_drawing_of_one_image(demo, tmp_path, capsys):
    # before: --output drawn.jpg (Detectron2's demo: the output file of one input) made a folder
    # drawn.jpg/ holding person.png
    assert cv2.imwrite(str(tmp_path / "person.png"), astronaut_bgr()[::8, ::8])  # 64 x 64
    out = tmp_path / "drawn" / "person_drawn.JPG"
    assert run(demo, "--input", tmp_path / "person.png", "--output", out) == 0
    assert os.listdir(tmp_path / "drawn") == ["person_drawn.JPG"] and cv2.imread(str(out)).shape == (64, 64, 3)
    assert f"-> {out}: 1 persons" in capsys.readouterr().out


def test_an_image_file_output_for_several_images_is_refused(demo, tmp_path, capsys, no_model):
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(tmp_path / name), astronaut_bgr()[::8, ::8])
    out = tmp_path / "drawn.png"
    assert run(demo, "--input", tmp_path / "a.png", tmp_path / "b.png", "--output", out) == 1
    assert f"error: --output {out} is the file of one input image, but there are 2: give a folder" in (
        capsys.readouterr().err
    )
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]


def test_unwritable_save_json_fails_before_any_image(demo, tmp_path, capsys):
    assert cv2.imwrite(str(tmp_path / "person.png"), astronaut_bgr()[::8, ::8])
    (tmp_path / "file").write_text("a file, not a folder")
    under_a_file = (tmp_path / "file" / "keypoints.json", f"its folder {tmp_path / 'file'} is not a folder")
    for bad, reason in (under_a_file, (tmp_path, "it is a folder")):
        status = demo.main(
            [
                "--config-file",
                INSTANT_CONFIG,
                "--input",
                str(tmp_path / "person.png"),
                "--output",
                str(tmp_path / "out"),
                "--save-json",
                str(bad),
                *CPU,
            ]
        )
        assert status == 1
        assert f"cannot write --save-json {bad}: {reason}" in capsys.readouterr().err
        assert os.listdir(tmp_path / "out") == []  # no image was processed
    assert run(demo, "--input", tmp_path / "person.png", "--output", tmp_path / "file") == 1
    assert f"cannot write --output {tmp_path / 'file'}: it is not a folder" in capsys.readouterr().err


def test_subfolders_are_skipped_and_truncated_jpegs_reported(demo, tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "subfolder").mkdir(parents=True)
    assert cv2.imwrite(str(inputs / "whole.jpg"), astronaut_bgr()[::4, ::4])
    jpeg = (inputs / "whole.jpg").read_bytes()
    (inputs / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # OpenCV would decode half of it
    status = demo.main(
        ["--config-file", INSTANT_CONFIG, "--input", str(inputs), "--output", str(tmp_path / "out"), *CPU]
    )
    assert status == 1
    out, err = capsys.readouterr()
    assert "whole.jpg -> " in out and "does not exist" not in err and str(inputs / "subfolder") not in err
    assert "skipping" in err and "cut.jpg" in err and "truncated" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["whole.png"]


def test_large_images_are_drawn_downscaled_with_the_keypoints_scaled(demo):
    """The friction: a 6000x4000 photo took 12.6 s and 3.8 GB in the demo (the Visualizer at full
    size) against 0.4 s and 1.0 GB through the Predictor. Drawn at <= MAX_DRAW_SIZE now: the
    drawing equals the Visualizer's on the image resized by hand, keypoints and box scaled by hand."""
    import torch

    from detectron2.data import Metadata
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.visualizer import Visualizer

    from depotr.data import coco_person_metadata

    metadata = Metadata(name="depotr_demo_test").set(**coco_person_metadata())
    image = cv2.resize(astronaut_bgr(), (3000, 2000), interpolation=cv2.INTER_LINEAR)
    generator = torch.Generator().manual_seed(0)
    keypoints = torch.rand(1, 17, 3, generator=generator) * torch.tensor([3000.0, 2000.0, 1.0])
    keypoints[..., 2] = 0.9
    keypoints_before = keypoints.clone()
    instances = Instances((2000, 3000))
    instances.pred_boxes = Boxes(torch.tensor([[300.0, 200.0, 2700.0, 1900.0]]))
    instances.scores = torch.tensor([0.8])
    instances.pred_classes = torch.tensor([0])
    instances.pred_keypoints = keypoints
    np.random.seed(0)  # the Visualizer draws a box in a random colour
    drawn = demo.draw(image, instances, metadata)
    assert drawn.shape == (1280, 1920, 3)  # 1920 / 3000 = 0.64 = 1280 / 2000
    expected_instances = Instances((1280, 1920))
    expected_instances.pred_boxes = Boxes(instances.pred_boxes.tensor * 0.64)  # (192, 128, 1728, 1216)
    expected_instances.scores = instances.scores
    expected_instances.pred_classes = instances.pred_classes
    expected_instances.pred_keypoints = torch.cat([keypoints[..., :2] * 0.64, keypoints[..., 2:]], dim=-1)
    small = cv2.resize(image, (1920, 1280), interpolation=cv2.INTER_AREA)
    np.random.seed(0)
    expected = Visualizer(small[:, :, ::-1], metadata).draw_instance_predictions(expected_instances).get_image()
    np.testing.assert_array_equal(drawn, expected[:, :, ::-1])
    assert not np.array_equal(drawn, small)  # a person was drawn
    torch.testing.assert_close(instances.pred_keypoints, keypoints_before, rtol=0, atol=0)  # the caller's are unchanged
    assert instances.pred_boxes.tensor.tolist() == [[300.0, 200.0, 2700.0, 1900.0]] and instances.image_size == (
        2000,
        3000,
    )
    assert demo.draw(image[:1080, :1920], instances[:0], metadata).shape == (1080, 1920, 3)  # not resized
    assert demo.drawn_size(4000, 6000) == (1280, 1920) and demo.drawn_size(100, 50) == (100, 50)


# ---- inputs and outputs (issue 23 items 4, 5 and 8's --output x.mp4) and video (issue 22) ----


def box_file(path, per_image):
    """A COCO detection results file: image_id -> list of XYWH boxes (score 0.9, person)."""
    path.write_text(
        json.dumps(
            [
                {"image_id": i, "category_id": 1, "bbox": list(b), "score": 0.9}
                for i, boxes in per_image.items()
                for b in boxes
            ]
        )
    )
    return str(path)


def run(demo, *args):
    return demo.main(["--config-file", INSTANT_CONFIG, *map(str, args), *CPU])


@pytest.fixture
def no_model(demo, monkeypatch):
    """Makes loading the model fail: what must fail before it, does."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    import depotr

    monkeypatch.setattr(depotr, "Predictor", refuse)  # the demo imports it once the inputs are checked


def test_folder_non_image_files_are_left_out_and_counted(demo, tmp_path, capsys):
    # before: notes.txt and .DS_Store were "skipping ...: cannot read image" and the run exited 1
    inputs = tmp_path / "in"
    inputs.mkdir()
    assert cv2.imwrite(str(inputs / "a.png"), astronaut_bgr()[::8, ::8])
    (inputs / "notes.txt").write_text("not an image")
    (inputs / ".DS_Store").write_bytes(b"\0\1")
    assert run(demo, "--input", inputs, "--output", tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "left out 2 file(s) of the input folders that are not images" in out and "skipping" not in err
    assert os.listdir(tmp_path / "out") == ["a.png"]


@pytest.mark.parametrize("pattern", ["", "f*.png"])
def test_numbered_frames_of_a_folder_or_glob_are_tracked_in_their_order(demo, tmp_path, pattern):
    # before: sorted as text, ffmpeg's f1.png ... f10.png were tracked as f1, f10, f2, ...
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, frame in enumerate(walk_frames(11)):
        assert cv2.imwrite(str(inputs / f"f{i}.png"), frame[::2, ::2])
    results = tmp_path / "res.json"
    assert run(demo, "--input", inputs / pattern, "--output", tmp_path / "out", "--track", "--save-json", results) == 0
    assert [r["image_id"] for r in json.loads(results.read_text())] == [f"f{i}" for i in range(11)]


def test_image_id_is_the_stem_as_a_number_when_it_is_one(demo):
    # before: isdigit took a superscript (photo "2\u00b2.jpg") for a number and int() raised
    assert [demo.image_id_from_path(p) for p in ("a/000123.jpg", "b/2\u00b2.jpg", "c/x1.png")] == [123, "2\u00b2", "x1"]


def test_natural_key_orders_numbers_by_value_and_takes_any_name(demo):
    names = ["f10.png", "f2.png", "f1\u00b23.png", "f02b.png", "g.png"]  # a superscript two is no decimal digit
    assert sorted(names, key=demo.natural_key) == ["f1\u00b23.png", "f2.png", "f02b.png", "f10.png", "g.png"]


def test_images_named_one_by_one_out_of_their_numbers_order_are_tracked_so_with_a_warning(demo, tmp_path, capsys):
    # before: an unquoted glob (--input in/*.png, sorted as text by the shell) was tracked as
    # f0, f1, f10, f2 without a word
    paths = [tmp_path / f"f{i}.png" for i in (0, 1, 10, 2)]
    for path, frame in zip(paths, walk_frames(4)):
        assert cv2.imwrite(str(path), frame[::2, ::2])
    results = tmp_path / "res.json"
    for track in ([], ["--track"]):
        assert run(demo, "--input", *paths, "--output", tmp_path / "out", *track, "--save-json", results) == 0
        out = capsys.readouterr().out
        assert [r["image_id"] for r in json.loads(results.read_text())] == ["f0", "f1", "f10", "f2"]  # as given
        warning = f"warning: the images are tracked in the order given, {paths[2]} before {paths[3]}, not in the"
        assert (warning in out) == bool(track)


def test_empty_folder_and_mistyped_path_are_errors_before_the_model_loads(demo, tmp_path, capsys, no_model):
    # before: an empty folder exited 0 writing [], a mistyped path failed only after the model loaded
    (tmp_path / "empty").mkdir()
    results = tmp_path / "keypoints.json"
    assert run(demo, "--input", tmp_path / "empty", "--output", tmp_path / "out", "--save-json", results) == 1
    assert f"error: no images found in {tmp_path / 'empty'}" in capsys.readouterr().err
    assert not results.exists()
    assert run(demo, "--input", tmp_path / "phtos", "--output", tmp_path / "out") == 1
    assert f"error: input {tmp_path / 'phtos'} does not exist" in capsys.readouterr().err
    assert run(demo, "--input", tmp_path / "empty" / "*.jpg", "--output", tmp_path / "out") == 1
    assert "does not exist (no file matches it)" in capsys.readouterr().err


def test_image_ids_from_a_coco_file_make_the_results_evaluable(demo, tmp_path, capsys):
    # before: 000000.jpg got image_id 0 against the dataset's 1, and analyze_results only said
    # "results[0] has image_id 0, which is not in the ground truth"
    inputs = tmp_path / "images"
    inputs.mkdir()
    category = {"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": []}
    gt = {"images": [], "annotations": [], "categories": [category]}
    for i in range(2):
        name = f"{i:06d}.jpg"
        assert cv2.imwrite(str(inputs / name), np.roll(astronaut_bgr()[::4, ::4], 16 * i, axis=0))
        gt["images"].append({"id": i + 1, "file_name": f"val/{name}", "height": 128, "width": 128})
        keypoints = np.concatenate([np.random.default_rng(i).uniform(20, 100, (17, 2)), np.full((17, 1), 2)], 1)
        gt["annotations"].append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "keypoints": keypoints.reshape(-1).tolist(),
                "num_keypoints": 17,
                "area": 6400.0,
                "bbox": [20.0, 20.0, 80.0, 80.0],
                "iscrowd": 0,
            }
        )
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    analyze = load_script("tools/analyze_results.py")

    stem_ids, coco_ids = tmp_path / "stem_ids.json", tmp_path / "coco_ids.json"
    assert run(demo, "--input", inputs, "--output", tmp_path / "out", "--save-json", stem_ids) == 0
    assert sorted(r["image_id"] for r in json.loads(stem_ids.read_text())) == [0, 1]
    argv = ["--gt", str(gt_file), "--output", str(tmp_path / "analysis"), "--results"]
    capsys.readouterr()
    assert analyze.main([*argv, str(stem_ids)]) == 1
    assert f"demo/demo.py takes an image's id from its file name unless given --image-ids {gt_file}" in (
        capsys.readouterr().err
    )

    argv_demo = ["--input", inputs, "--output", tmp_path / "out", "--save-json", coco_ids, "--image-ids", gt_file]
    assert run(demo, *argv_demo) == 0
    assert sorted(r["image_id"] for r in json.loads(coco_ids.read_text())) == [1, 2]
    assert analyze.main([*argv, str(coco_ids)]) == 0

    gt["images"].pop()
    gt_file.write_text(json.dumps(gt))
    assert run(demo, *argv_demo) == 1
    assert f"has no image named like 1 input(s): {inputs / '000001.jpg'}" in capsys.readouterr().err


def test_image_ids_of_your_own_keypoints_give_their_category_to_boxes_and_results(demo, tmp_path, capsys):
    # before: the results said category_id 1 whatever the ground truth's category, so results of a
    # kite dataset (category 7) could not be evaluated against it: analyze_results refused them
    # ("results[0] has category_id 1, the ground truth's category is 7"), pycocotools scores them 0
    from tests.data.test_custom_keypoints import CATEGORY_ID, KITE, KITE_FLIP, write_keypoint_dataset

    gt_file, images = write_keypoint_dataset(tmp_path / "kites", 2, KITE, 0)
    boxes = tmp_path / "boxes.json"
    detections = [{"image_id": 1, "category_id": CATEGORY_ID, "bbox": [5, 5, 40, 40], "score": 0.9}]
    detections += [{"image_id": i, "category_id": 1, "bbox": [0, 0, 64, 64], "score": 0.9} for i in (1, 2)]
    boxes.write_text(json.dumps(detections))
    results = tmp_path / "kites.json"
    argv = ["--input", images, "--output", tmp_path / "out", "--image-ids", gt_file, "--boxes", boxes]
    kite_model = ["MODEL.DEPOTR.NUM_KEYPOINTS", "5", "MODEL.DEPOTR.KEYPOINT_NAMES", repr(KITE),
                  "MODEL.DEPOTR.KEYPOINT_FLIP_MAP", repr([list(KITE_FLIP[0])]), "TEST.KEYPOINT_OKS_SIGMAS",
                  str([0.05] * 5), "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                  "INPUT.CROP_AUG.HALF_BODY_PROB", "0.0"]  # fmt: skip
    argv = ["--config-file", INSTANT_CONFIG, *map(str, argv), "--save-json", str(results), *CPU, *kite_model]
    assert demo.main(argv) == 0
    assert "1 person boxes of 3 detections (2 not of category 7, 0 empty, left out)" in capsys.readouterr().out
    found = json.loads(results.read_text())
    assert [(r["image_id"], r["category_id"], r["bbox"]) for r in found] == [(1, CATEGORY_ID, [5.0, 5.0, 40.0, 40.0])]
    assert len(found[0]["keypoints"]) == 15
    analyze = load_script("tools/analyze_results.py")
    argv = ["--gt", gt_file, "--results", str(results), "--output", str(tmp_path / "analysis"), "--sigmas"]
    assert analyze.main([*argv, *["0.05"] * 5]) == 0


def test_box_file_gives_the_persons_of_images(demo, tmp_path, capsys):
    # before: the demo had no way to pass person boxes
    assert cv2.imwrite(str(tmp_path / "000007.png"), astronaut_bgr()[::4, ::4])
    assert cv2.imwrite(str(tmp_path / "000008.png"), astronaut_bgr()[::4, ::4])
    boxes = box_file(tmp_path / "boxes.json", {7: [(10, 10, 40, 80), (60, 20, 50, 100)], 99: [(0, 0, 5, 5)]})
    results = tmp_path / "keypoints.json"
    inputs = [tmp_path / "000007.png", tmp_path / "000008.png"]
    assert run(demo, "--input", *inputs, "--output", tmp_path / "out", "--boxes", boxes, "--save-json", results) == 0
    assert "left out the boxes of 1 image id(s) that are not among the inputs" in capsys.readouterr().out
    found = json.loads(results.read_text())
    assert [r["image_id"] for r in found] == [7, 7]  # image 8 has no box: no person
    assert sorted(r["bbox"] for r in found) == [[10.0, 10.0, 40.0, 80.0], [60.0, 20.0, 50.0, 100.0]]


def test_a_box_outside_a_frame_is_reported_with_the_frame_index(demo, tmp_path, capsys, caplog):
    # before: every frame (and every image) reached the Predictor as "image 0" of its batch, and the
    # warning said "Image 0" for a box of frame 2
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(3))  # 128 x 128
    boxes = box_file(tmp_path / "boxes.json", {0: [(8, 10, 40, 90)], 2: [(8, 10, 40, 90), (300, 10, 40, 90)]})
    with caplog.at_level("WARNING", logger="depotr.modeling.box_sources"):
        assert run(demo, "--video-input", video, "--output", tmp_path / "out.mp4", "--boxes", boxes) == 0
    # the console handler of the demo's setup_logger (stdout), or pytest's once an earlier test ran it
    out = capsys.readouterr().out + caplog.text
    assert "Image 2: dropped precomputed person boxes [[300.0, 10.0, 340.0, 100.0]] (indices [1])" in out
    assert "Image 0:" not in out


def test_video_output_file_tracking_smoothing_and_box_file(demo, tmp_path, capsys):
    # before: --output out.mp4 created the folder out.mp4/walk.mp4; no ids, no smoothing
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(5))
    boxes = box_file(tmp_path / "boxes.json", {i: [(8 * i, 10, 40, 90), (100 - 8 * i, 20, 28, 90)] for i in range(5)})
    results = tmp_path / "keypoints.json"
    out = tmp_path / "out" / "walk_tracked.mp4"
    status = run(demo, "--video-input", video, "--output", out, "--boxes", boxes, "--smooth", "--save-json", results)
    assert status == 0
    assert out.is_file() and len(read_video(out)) == 5 and os.listdir(tmp_path / "out") == ["walk_tracked.mp4"]
    found = json.loads(results.read_text())
    assert [r["image_id"] for r in found] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    by_id = {}
    for r in found:
        by_id.setdefault(r["track_id"], []).append(r["bbox"][0])
    assert sorted(by_id) == [0, 1]  # two persons, the same ids in every frame
    assert sorted(xs[0] for xs in by_id.values()) == [0.0, 100.0]
    for xs in by_id.values():
        assert len(xs) == 5 and len(set(np.sign(np.diff(xs)))) == 1  # each id follows one person


@pytest.mark.parametrize("track", [False, True])
def test_tracking_keeps_two_persons_whose_poses_coincide(demo, tmp_path, track):
    """Two persons boxed alike give one pose: OKS-NMS (TEST.OKS_NMS_THRESH 0.9) keeps one of
    them, which breaks a crossing person's track; with --track the demo uses
    TEST.TRACK.OKS_NMS_THRESH (1.0, off) and keeps both."""
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(3))
    boxes = box_file(tmp_path / "boxes.json", {i: [(20, 10, 60, 100)] * 2 for i in range(3)})
    results = tmp_path / "keypoints.json"
    args = ["--video-input", video, "--output", tmp_path / "out.mp4", "--boxes", boxes, "--save-json", results]
    assert run(demo, *args, *(["--track"] if track else [])) == 0
    found = json.loads(results.read_text())
    assert [r["image_id"] for r in found] == ([0, 0, 1, 1, 2, 2] if track else [0, 1, 2])


def test_bad_videos_and_box_files_are_errors_and_write_nothing(demo, tmp_path, capsys):
    out = tmp_path / "out"
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    assert run(demo, "--video-input", broken, "--output", out) == 1
    assert f"error: cannot open {broken}: not a video, or one this OpenCV cannot read" in capsys.readouterr().err
    broken.write_bytes(b"")  # before: "cannot open" without a reason, for an empty file as for a broken one
    assert run(demo, "--video-input", broken, "--output", out) == 1
    assert f"error: cannot open {broken}: the file is empty" in capsys.readouterr().err
    empty = tmp_path / "empty.avi"
    write_video(empty, [], fourcc="MJPG")
    assert run(demo, "--video-input", empty, "--output", out) == 1
    assert f"error: {empty} has no frames" in capsys.readouterr().err

    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(5))
    boxes = box_file(tmp_path / "boxes.json", {0: [(8, 10, 40, 90)], 7: [(8, 10, 40, 90)]})
    results = tmp_path / "keypoints.json"
    assert run(demo, "--video-input", video, "--output", out, "--boxes", boxes, "--save-json", results) == 1
    assert f"--boxes {boxes} has boxes for frame(s) [7] but the video has frames 0-4; nothing written" in (
        capsys.readouterr().err
    )  # before: "the box file has boxes ...", not saying which file
    assert os.listdir(out) == [] and not results.exists()  # no half-written video, no json


def test_a_bad_tracking_value_in_the_overrides_is_one_error_line_and_status_2(demo, tmp_path, capsys):
    # before: a ValueError traceback (status 1) naming the tracker's argument, not the config key
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(2))
    argv = ["--config-file", INSTANT_CONFIG, "--video-input", video, "--output", tmp_path / "out", "--track"]
    status = run_main(demo.main, [*map(str, argv), *CPU, "TEST.TRACK.MIN_SIMILARITY", "1.5"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "error: TEST.TRACK / TEST.SMOOTH: iou_weight, min_similarity and velocity_gain must be in [0, 1], "
        "got 0.5, 1.5 and 0.1 (the names are the keys in lower case)"
    )


@pytest.mark.parametrize(
    "override,message",
    [
        (["TEST.TRACK.MIN_SIMILARITY", "1.5"], "error: TEST.TRACK / TEST.SMOOTH: iou_weight, min_similarity"),
        (["TEST.FLIPP", "True"], "error: unknown config key TEST.FLIPP in the overrides; did you mean TEST.FLIP?"),
    ],
)
def test_a_config_mistake_leaves_no_new_output_folder(demo, tmp_path, capsys, override, message):
    # before: the config was read after the output folders were made, so a typo left them behind
    # (the demo's docstring: a mistyped input leaves no new folder)
    video, out = tmp_path / "walk.mp4", tmp_path / "new" / "out"
    write_video(video, walk_frames(2))
    argv = ["--config-file", INSTANT_CONFIG, "--video-input", video, "--output", out, "--track"]
    status = run_main(demo.main, [*map(str, argv), "--save-json", str(tmp_path / "json" / "r.json"), *CPU, *override])
    assert status == 2 and capsys.readouterr().err.strip().splitlines()[-1].startswith(message)
    assert sorted(os.listdir(tmp_path)) == ["walk.mp4"]


def test_frames_that_change_size_are_skipped_and_counted(demo, tmp_path, capsys):
    runner = demo.Demo(
        Predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu"]), random_weights=True), None
    )
    frames = walk_frames(3)
    frames.insert(1, frames[0][:64])
    out = tmp_path / "out.mp4"
    assert runner.run_video(iter(frames), str(out), 10.0) == 1
    assert "skipping frame 1: its size 128x64 differs from the first frame's 128x128" in capsys.readouterr().err
    assert len(read_video(out)) == 3
    assert [r["image_id"] for r in runner.results] == [0, 2, 3]  # frames keep their index


def test_default_threshold_keeps_persons_scoring_below_zero(demo):
    # before: the default --confidence-threshold 0 dropped them (a heatmap model's keypoint scores,
    # hence person scores, can be negative; with random weights, about every other run)
    def predictor(image, boxes=None, scores=None, image_id=None):
        out = Instances(image.shape[:2])
        out.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
        out.pred_keypoints = torch.zeros(1, 17, 3)
        out.scores = torch.tensor([-0.3])
        out.pred_classes = torch.zeros(1, dtype=torch.int64)
        return out

    predictor.cfg = load_depotr_config(INSTANT_CONFIG)  # the keypoints the demo draws
    args = demo.get_parser().parse_args(["--config-file", "x.yaml", "--input", "a.png", "--output", "out"])
    runner = demo.Demo(predictor, args.confidence_threshold)
    assert len(runner(np.zeros((20, 20, 3), np.uint8), 0)) == 1 and runner.results[0]["score"] == pytest.approx(-0.3)
    assert len(demo.Demo(predictor, 0.0)(np.zeros((20, 20, 3), np.uint8), 0)) == 0


def test_tracked_persons_are_drawn_in_their_id_colour(demo):
    image = np.full((120, 160, 3), 128, np.uint8)
    from detectron2.data import Metadata

    from depotr.data import coco_person_metadata

    metadata = Metadata(name="depotr_demo_test").set(**coco_person_metadata())

    def drawn(track_id):
        out = Instances((120, 160))
        out.pred_boxes = Boxes(torch.tensor([[20.0, 20.0, 100.0, 110.0]]))
        out.pred_keypoints = torch.cat([torch.rand(1, 17, 2) * 60 + 30, torch.ones(1, 17, 1)], 2)
        out.scores = torch.ones(1)
        out.track_id = torch.tensor([track_id])
        return demo.draw(image, out, metadata).astype(int)

    first, again, other = [(torch.manual_seed(0), drawn(i))[1] for i in (0, 0, 1)]  # the same pose each time
    np.testing.assert_array_equal(first, again)  # an id keeps its colour
    edge = first[20:110, 20]  # the box's left edge
    assert np.abs(edge - other[20:110, 20]).max() > 40  # another id, another colour
    from detectron2.utils.colormap import colormap

    palette = colormap(rgb=True, maximum=255)
    bgr0 = palette[0][::-1]
    assert np.abs(edge.mean(0) - bgr0).max() < np.abs(edge.mean(0) - palette[1][::-1]).max()


# ---- video and webcam review (truncated video, fps, --output extension, webcam GUI and Ctrl-C,
# skipped frames and the tracker, keypoints shifted in place) ----


class FakeCapture:
    """A cv2.VideoCapture of ``frames`` with the given CAP_PROP_FPS and CAP_PROP_FRAME_COUNT;
    ``interrupt_after``: a read after that many frames raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, frames, fps=10.0, frame_count=0.0, interrupt_after=None):
        self.frames, self.fps, self.frame_count = list(frames), fps, frame_count
        self.interrupt_after, self.reads, self.released = interrupt_after, 0, False

    def __call__(self, source):  # stands in for the class: cv2.VideoCapture(source)
        self.source = source
        return self

    def isOpened(self):
        return not self.released

    def read(self):
        if self.interrupt_after is not None and self.reads >= self.interrupt_after:
            raise KeyboardInterrupt
        self.reads += 1
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.frame_count}.get(prop, 0.0)

    def release(self):
        self.released = True


def placeholder_video(tmp_path):
    """The --video-input of a FakeCapture: an empty file (the demo checks that the video exists)."""
    path = tmp_path / "walk.mp4"
    path.touch()
    return path


def fake_predictor(x=30.0):
    """A Predictor of one person whose keypoints are all at (x, x), scores 1; ``made`` holds its outputs."""

    def predictor(image, boxes=None, scores=None, image_id=None):
        out = Instances(image.shape[:2])
        out.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 120.0]]))
        out.pred_keypoints = torch.cat([torch.full((1, 17, 2), x), torch.ones(1, 17, 1)], 2)
        out.scores = torch.ones(1)
        out.pred_classes = torch.zeros(1, dtype=torch.int64)
        predictor.made.append(out)
        return out

    predictor.cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu"])
    predictor.made = []
    return predictor


def test_truncated_video_is_a_warning_naming_it_and_status_1(demo, tmp_path, capsys):
    # before: the first failed read was the end: 10 of 20 frames, status 0, not a word
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    write_video(full, [cv2.resize(f, (64, 64)) for f in walk_frames(20)], fourcc="MJPG")
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    readable = len(read_video(cut))
    assert 0 < readable < 20 and cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT) == 20
    out, results = tmp_path / "out.mp4", tmp_path / "keypoints.json"
    assert run(demo, "--video-input", cut, "--output", out, "--save-json", results) == 1
    err = capsys.readouterr().err
    assert f"warning: {cut}: read {readable} of the 20 frames it announces" in err
    assert f"{20 - readable} frame(s) were skipped or could not be read" in err
    assert len(read_video(out)) == readable  # the frames read are kept, as skipped frames' videos are
    assert [r["image_id"] for r in json.loads(results.read_text())] == list(range(readable))


def test_truncated_video_with_boxes_for_every_announced_frame_writes_the_frames_read(
    demo, tmp_path, capsys, monkeypatch
):
    # before: the boxes of the frames announced but not read were "frames the video does not have":
    # an error and nothing written, where the video without --boxes gives the frames read
    frames = [{"image_id": i, "category_id": 1, "bbox": [10, 10, 40, 90], "score": 0.9} for i in range(6)]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(frames))
    out, results = tmp_path / "out.mp4", tmp_path / "keypoints.json"
    with monkeypatch.context() as patch:
        patch.setattr(cv2, "VideoCapture", FakeCapture(walk_frames(4), frame_count=5.0))
        args = ["--video-input", placeholder_video(tmp_path), "--output", out, "--boxes", boxes, "--save-json", results]
        assert run(demo, *args) == 1
    err = capsys.readouterr().err
    assert "read 4 of the 5 frames it announces" in err
    assert f"--boxes {boxes} has boxes for frame(s) [5] but the video has frames 0-4; nothing written" in err
    assert not out.exists() and not results.exists()  # frame 5 is beyond even the announced ones
    boxes.write_text(json.dumps(frames[:5]))
    with monkeypatch.context() as patch:
        patch.setattr(cv2, "VideoCapture", FakeCapture(walk_frames(4), frame_count=5.0))
        assert run(demo, *args) == 1
    assert "read 4 of the 5 frames it announces" in capsys.readouterr().err
    assert len(read_video(out)) == 4
    assert [r["image_id"] for r in json.loads(results.read_text())] == [0, 1, 2, 3]


@pytest.mark.parametrize("fps", [float("nan"), -1.0])
def test_video_without_a_valid_frame_rate_is_written_at_30_fps(demo, tmp_path, monkeypatch, fps):
    # before: `fps or 30.0` let NaN and -1 through: the tracker raised "fps finite and > 0"
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as patch:
        patch.setattr(cv2, "VideoCapture", FakeCapture(walk_frames(3), fps=fps, frame_count=3.0))
        assert run(demo, "--video-input", placeholder_video(tmp_path), "--output", out, "--track") == 0
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == 30.0 and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    capture.release()


@pytest.mark.parametrize("extension", [".webm", ".MPG", ".ts"])
def test_output_with_a_video_extension_the_demo_does_not_write_is_an_error(demo, tmp_path, capsys, no_model, extension):
    # before: --output result.webm became the folder result.webm/ holding walk.mp4
    video = tmp_path / "walk.mp4"
    write_video(video, walk_frames(1))
    out = tmp_path / f"result{extension}"
    assert run(demo, "--video-input", video, "--output", out) == 1
    err = capsys.readouterr().err
    assert f"error: --output {out}: the demo writes a video (mp4v) only as .mp4, .avi, .mov, .mkv, .m4v" in err
    assert not out.exists()
    assert demo.video_output_path("walk.mp4", "out") == os.path.join("out", "walk.mp4")  # a folder, as before


def test_webcam_without_a_gui_is_an_error_before_the_model_loads(demo, tmp_path, capsys, monkeypatch, no_model):
    # before: opencv-python-headless (setup.py's) failed with a raw cv2.error in imshow, model loaded
    def no_gui(name, *args):
        raise cv2.error("The function is not implemented. Rebuild the library with Windows, GTK+ 2.x or Cocoa support")

    camera = FakeCapture(walk_frames(1))
    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    monkeypatch.setattr(cv2, "VideoCapture", camera)
    assert run(demo, "--webcam", "--save-json", tmp_path / "keypoints.json") == 1
    err = capsys.readouterr().err
    assert "error: --webcam needs an OpenCV with a GUI (pip install opencv-python" in err and "Cocoa" in err
    assert camera.reads == 0 and not (tmp_path / "keypoints.json").exists()  # not even the camera was opened


def test_webcam_stopped_with_ctrl_c_saves_the_json_and_releases_the_camera(demo, tmp_path, capsys, monkeypatch):
    # before: the KeyboardInterrupt went through: no --save-json, the camera left open
    camera = FakeCapture(walk_frames(3), fps=30.0, interrupt_after=3)
    shown = []
    monkeypatch.setattr(cv2, "VideoCapture", camera)
    monkeypatch.setattr(cv2, "namedWindow", lambda name, *args: None)
    monkeypatch.setattr(cv2, "destroyWindow", lambda name: None)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    monkeypatch.setattr(cv2, "imshow", lambda name, image: shown.append(image.shape))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: -1)
    results = tmp_path / "keypoints.json"
    try:
        status = run(demo, "--webcam", "--track", "--save-json", results)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went through the demo")
    assert status == 0 and shown == [(128, 128, 3)] * 3 and camera.released
    assert "stopped (Ctrl-C)" in capsys.readouterr().out
    assert [(r["image_id"], r["track_id"]) for r in json.loads(results.read_text())] == [(0, 0), (1, 0), (2, 0)]


def test_video_stopped_with_ctrl_c_keeps_the_frames_done_as_the_webcam(demo, tmp_path, capsys, monkeypatch):
    # before: a KeyboardInterrupt traceback, no --save-json, no video (the webcam's Ctrl-C saves the json)
    camera = FakeCapture(walk_frames(5), frame_count=5.0, interrupt_after=3)
    video, out, results = placeholder_video(tmp_path), tmp_path / "out" / "walk.mp4", tmp_path / "keypoints.json"
    with monkeypatch.context() as patch:
        patch.setattr(cv2, "VideoCapture", camera)
        try:
            status = run(demo, "--video-input", video, "--output", out, "--track", "--save-json", results)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C went through the demo")
    captured = capsys.readouterr()
    assert status == 130 and camera.released
    assert f"stopped (Ctrl-C) after 3 of the 5 frames of {video}" in captured.out
    assert "announces" not in captured.err  # not a video that ends early
    assert len(read_video(out)) == 3 and os.listdir(out.parent) == ["walk.mp4"]
    assert [(r["image_id"], r["track_id"]) for r in json.loads(results.read_text())] == [(0, 0), (1, 0), (2, 0)]


def test_images_stopped_with_ctrl_c_keep_the_images_done_as_a_video(demo, tmp_path, capsys, monkeypatch):
    # before: an image sequence tracked as frames (--input --track) stopped with a KeyboardInterrupt
    # traceback and no --save-json, where a video keeps the frames done and exits 130
    inputs, results = tmp_path / "in", tmp_path / "keypoints.json"
    inputs.mkdir()
    for i, frame in enumerate(walk_frames(4)):
        assert cv2.imwrite(str(inputs / f"{i}.png"), frame)
    predictor = fake_predictor()

    def interrupted(image, boxes=None, scores=None, image_id=None):
        out = predictor(image, boxes, scores, image_id)
        if image_id == 2:
            raise KeyboardInterrupt
        return out

    interrupted.cfg = predictor.cfg
    monkeypatch.setattr("depotr.Predictor", lambda cfg, random_weights=False: interrupted)
    try:
        status = run(demo, "--input", inputs, "--output", tmp_path / "out", "--track", "--save-json", results)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went through the demo")
    assert status == 130 and "stopped (Ctrl-C) after 2 of the 4 images" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "out")) == ["0.png", "1.png"]
    assert [(r["image_id"], r["track_id"]) for r in json.loads(results.read_text())] == [(0, 0), (1, 0)]


def test_ctrl_c_before_the_first_frame_is_done_exits_130(demo, tmp_path, capsys, monkeypatch):
    # before: status 1, as a broken video, where the docstring promises a Ctrl-C's 130
    def interrupted(image, instances, metadata):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "draw", interrupted)
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture(walk_frames(3), frame_count=3.0))
    video = placeholder_video(tmp_path)
    try:
        status = run(demo, "--video-input", video, "--output", tmp_path / "out", "--track")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went through the demo")
    assert status == 130
    assert f"error: {video}: stopped (Ctrl-C) before the first frame was done; nothing written" in (
        capsys.readouterr().err
    )


def test_ctrl_c_in_the_middle_of_a_frame_keeps_the_frames_written(demo, tmp_path, capsys, monkeypatch):
    draw, drawn = demo.draw, []

    def interrupted_at_the_third(image, instances, metadata):  # frame 2: predicted, not yet written
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(image)
        return draw(image, instances, metadata)

    monkeypatch.setattr(demo, "draw", interrupted_at_the_third)
    runner = demo.Demo(fake_predictor(), None)
    out = tmp_path / "out.mp4"
    try:
        assert runner.run_video(iter(walk_frames(4)), str(out), 10.0, total=4) == 0
    except KeyboardInterrupt:  # would stop pytest
        pytest.fail("Ctrl-C went through run_video")
    assert runner.stopped and "stopped (Ctrl-C) after 2 of the 4 frames" in capsys.readouterr().out
    assert len(read_video(out)) == 2 and [r["image_id"] for r in runner.results] == [0, 1]  # not frame 2's
    drawn[:] = [None, None]  # the next frame drawn is interrupted: the first one
    runner = demo.Demo(fake_predictor(), None)
    with pytest.raises(ValueError, match=r"stopped \(Ctrl-C\) before the first frame was done"):
        runner.run_video(iter(walk_frames(4)), str(tmp_path / "none.mp4"), 10.0)
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"] and runner.results == []


def test_sigterm_removes_the_video_being_written(demo, tmp_path, capsys, monkeypatch):
    # before: SIGTERM ended the process at once, leaving .tmp-<hex>-walk.mp4 in the output folder
    # (here a handler that only records it stands in for the default action, which would end pytest)
    received = []

    def record(signum, frame):
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        camera = FakeCapture(walk_frames(5), frame_count=5.0)
        read = camera.read
        camera.read = lambda: (os.kill(os.getpid(), signal.SIGTERM) if camera.reads == 3 else None) or read()
        monkeypatch.setattr(cv2, "VideoCapture", camera)
        out, results = tmp_path / "out", tmp_path / "keypoints.json"
        status = run(demo, "--video-input", placeholder_video(tmp_path), "--output", out, "--save-json", results)
        assert signal.getsignal(signal.SIGTERM) is record  # the demo's handler is gone once it ends
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 143 and received == [] and camera.released
    assert "error: terminated (SIGTERM); the output being written was removed" in capsys.readouterr().err
    assert os.listdir(out) == [] and not results.exists()  # no video, no temporary file, no json


@pytest.mark.slow
def test_a_demo_killed_with_sigterm_leaves_no_temporary_file(tmp_path):
    video, out = tmp_path / "walk.mp4", tmp_path / "out"
    write_video(video, [cv2.resize(f, (64, 64)) for f in walk_frames(10)] * 50)
    args = ["--config-file", INSTANT_CONFIG, "--video-input", str(video), "--output", str(out), *CPU]
    process = subprocess.Popen(
        [sys.executable, DEMO, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and os.listdir(out)) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in os.listdir(out) if p.startswith(".tmp-")], "the demo was not writing the video"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err[-2000:]
    assert os.listdir(out) == []


def test_frames_skipped_for_their_size_age_the_tracks(demo, tmp_path, capsys):
    # before: the tracker did not see the 12 skipped frames: the person kept id 0 across a gap
    # longer than TEST.TRACK.MAX_LOST_FRAMES (10)
    predictor = fake_predictor()
    tracker = PoseTracker.from_config(predictor.cfg, fps=10.0)
    runner = demo.Demo(predictor, None, tracker)
    frame = walk_frames(1)[0]
    assert runner.run_video(iter([frame] + [frame[:64]] * 12 + [frame]), str(tmp_path / "out.mp4"), 10.0) == 12
    assert [(r["image_id"], r["track_id"]) for r in runner.results] == [(0, 0), (13, 1)]
    assert tracker.frame == 13  # the video's frame index


def test_unreadable_images_age_the_tracks(demo, tmp_path, capsys):
    # before: an image sequence tracked as frames did not count an unreadable image: the person kept
    # its id across a gap longer than MAX_LOST_FRAMES (0) and the smoothing took one frame for two
    for name in ("0.png", "2.png"):
        assert cv2.imwrite(str(tmp_path / name), walk_frames(1)[0])
    (tmp_path / "1.png").write_bytes(b"not an image")
    predictor = fake_predictor()
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=0)
    runner = demo.Demo(predictor, None, tracker)
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert runner.run_images(paths, str(tmp_path / "out"), {path: i for i, path in enumerate(paths)}) == 1
    assert [(r["image_id"], r["track_id"]) for r in runner.results] == [(0, 0), (2, 1)]
    assert tracker.frame == 2


@pytest.mark.parametrize("track", [False, True])
def test_tracked_images_of_another_size_are_skipped_as_a_videos_frames(demo, tmp_path, capsys, track):
    # before: with --track, an image sequence whose second image was smaller was tracked across the
    # change (a box's IoU and the edge rule across frames of different sizes), where a video skips it
    frame = walk_frames(1)[0]
    for name, image in (("0.png", frame), ("1.png", frame[:64]), ("2.png", frame)):
        assert cv2.imwrite(str(tmp_path / name), image)
    tracker = PoseTracker(COCO_PERSON_OKS_SIGMAS, max_lost_frames=0) if track else None
    runner = demo.Demo(fake_predictor(), None, tracker)
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    assert runner.run_images(paths, str(tmp_path / "out"), {path: i for i, path in enumerate(paths)}) == track
    expected = [(0, 0), (2, 1)] if track else [(0, None), (1, None), (2, None)]
    assert [(r["image_id"], r.get("track_id")) for r in runner.results] == expected
    err = capsys.readouterr().err
    assert (f"skipping {paths[1]}: its size 128x64 differs from the first image's 128x128" in err) == track


@pytest.mark.parametrize("track", [False, True])
def test_json_keypoints_are_shifted_but_not_the_drawn_or_predicted_ones(demo, track):
    # before: instances_to_coco_json's in-place x - 0.5 reached the drawn persons and the
    # predictor's own output
    predictor = fake_predictor(30.0)
    runner = demo.Demo(predictor, None, PoseTracker.from_config(predictor.cfg) if track else None)
    drawn = runner(np.zeros((128, 128, 3), np.uint8), 0)
    assert drawn.pred_keypoints[0, :, :2].unique().tolist() == [30.0]
    assert predictor.made[0].pred_keypoints[0, :, :2].unique().tolist() == [30.0]
    assert runner.results[0]["keypoints"][:3] == [29.5, 29.5, 1.0]  # Detectron2's pixel-index convention
