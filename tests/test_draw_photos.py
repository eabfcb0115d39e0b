"""tools/draw_photos.py: predictions drawn on the photos shipped in packages, one PNG."""

import os

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")


def _tool():
    return load_script("tools/draw_photos.py")


def test_photos_side_by_side_with_skeletons(tmp_path):
    torch.manual_seed(0)  # the randomly initialised model
    tool = _tool()
    out = tmp_path / "photos.png"
    args = [
        "--config-file",
        CONFIG,
        "--random-weights",
        "--output",
        str(out),
        "--height",
        "96",
        "--photos",
        "astronaut",
        "camera",
    ]
    assert tool.main(args + ["--box", "camera", "100", "40", "400", "500", "MODEL.DEVICE", "cpu"]) == 0
    png = cv2.imread(str(out))[:, :, ::-1]
    assert png.shape == (96, 96 + 96, 3)  # both photos are 512 x 512
    # The box and the random model's skeleton change the astronaut's panel against the plain photo.
    plain = cv2.resize(tool.PHOTOS["astronaut"](), (96, 96), interpolation=cv2.INTER_AREA)
    assert (np.abs(png[:, :96].astype(int) - plain.astype(int)).max(2) > 40).sum() >= 100
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_photo_loaders_give_rgb_uint8():
    for name, load in _tool().PHOTOS.items():
        image = load()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 256, name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--photos", "chelsea"], "invalid choice"),
        (["--box", "chelsea", "0", "0", "1", "1"], "not among the photos"),
        (["--photos", "camera", "--box", "astronaut", "0", "0", "9", "9"], "not among the photos"),
        (["--box", "camera", "0", "0", "x", "9"], "are not four numbers"),
        # before: accepted, then a traceback after the model ran naming "image 0", not the --box
        (["--box", "camera", "10", "0", "10", "9"], "--box camera: [10.0, 0.0, 10.0, 9.0] is not a box X0 Y0 X1 Y1"),
        (["--box", "camera", "0", "9", "5", "2"], "--box camera: [0.0, 9.0, 5.0, 2.0] is not a box X0 Y0 X1 Y1"),
        (["--box", "camera", "0", "0", "nan", "9"], "--box camera: [0.0, 0.0, nan, 9.0] is not a box X0 Y0 X1 Y1"),
    ],
)
def test_bad_boxes_are_errors(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(
        "depotr.predictor.Predictor", lambda *a, **k: pytest.fail("the model was built before the check")
    )
    with pytest.raises(SystemExit):
        _tool().main(["--config-file", CONFIG, "--random-weights", "--output", str(tmp_path / "p.png")] + extra)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "output, extra, message",
    [
        ("file/p.png", [], "--output {tmp}/file/p.png: its folder {tmp}/file is not a folder"),
        ("new/p.png", ["--height", "0"], "--height must be >= 1, got 0"),
    ],
    ids=["output-folder", "height"],
)
def test_bad_output_and_height_are_errors_before_the_model_runs(tmp_path, capsys, monkeypatch, output, extra, message):
    """The friction: after the model ran, a bad --output folder was a FileNotFoundError naming
    the temporary file (.tmp-...-p.png), and --height 0 an OpenCV assertion in resize."""
    (tmp_path / "file").write_text("a file, not a folder")
    tool = _tool()
    monkeypatch.setattr(
        "depotr.predictor.Predictor", lambda *a, **k: pytest.fail("the model was built before the check")
    )
    with pytest.raises(SystemExit):
        tool.main(["--config-file", CONFIG, "--random-weights", "--output", str(tmp_path / output)] + extra)
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # a bad argument makes no folder


def test_empty_weights_are_refused_without_random_weights(tmp_path, capsys):
    from depotr.cli import run_main

    assert run_main(_tool().main, ["--config-file", CONFIG, "--output", str(tmp_path / "p.png")]) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err and not os.listdir(tmp_path)


def test_a_missing_output_folder_is_made(tmp_path):
    # before: "its folder ... does not exist", where the demo and visualize_predictions make it
    out = tmp_path / "new" / "sub" / "photos.png"
    args = ["--config-file", CONFIG, "--random-weights", "--output", str(out), "--height", "32"]
    assert _tool().main(args + ["--photos", "camera", "MODEL.DEVICE", "cpu"]) == 0
    assert cv2.imread(str(out)).shape == (32, 32, 3)
