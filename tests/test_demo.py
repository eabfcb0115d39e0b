"""demo/demo.py end to end: real photos from scikit-image in several layouts (plus an unreadable
file), --save-json, --confidence-threshold, a video and a missing video.

One run goes through a subprocess (the script as users run it); the others call its ``main``
in this process, which saves loading torch and Detectron2 again."""

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "demo", "demo.py")
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
CPU = ["--random-weights", "--opts", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("depotr_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    assert "1 image(s) could not be read" in completed.stderr
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


def test_video_gives_an_mp4_with_every_frame(demo, tmp_path):
    video = tmp_path / "walk.mp4"
    frames = [np.roll(astronaut_bgr()[::4, ::4], 8 * i, axis=1) for i in range(5)]  # 128 x 128
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 128))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
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
    capture = cv2.VideoCapture(str(tmp_path / "out" / "walk.mp4"))
    assert capture.isOpened()
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    capture.release()
    assert len(read) == 5 and all(f.shape == (128, 128, 3) for f in read)
    assert [r["image_id"] for r in json.loads(results_json.read_text())] == [0, 1, 2, 3, 4]  # frame indices


def test_missing_video_is_an_error_naming_it(demo, tmp_path, capsys):
    missing = str(tmp_path / "no_such_video.mp4")
    status = demo.main(["--config-file", INSTANT_CONFIG, "--video-input", missing, "--output", str(tmp_path), *CPU])
    assert status != 0
    assert f"cannot open {missing}" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # nothing written


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
    assert os.listdir(tmp_path / "out") == []


def test_unwritable_save_json_fails_before_any_image(demo, tmp_path, capsys):
    assert cv2.imwrite(str(tmp_path / "person.png"), astronaut_bgr()[::8, ::8])
    (tmp_path / "file").write_text("a file, not a folder")
    for bad in (tmp_path / "file" / "keypoints.json", tmp_path):  # under a file; a folder
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
        assert f"cannot write --save-json {bad}" in capsys.readouterr().err
        assert os.listdir(tmp_path / "out") == []  # no image was processed


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
