"""tools/visualize_predictions.py: the evaluation's box source (the person detector too), one PNG
per image, write failures and a bad --num-images are errors."""

import os

import pytest
import torch
from torch import nn

from detectron2.structures import Boxes, Instances

from depotr.cli import run_main
from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic_persons"))


def _argv(output, synthetic_root, *opts, num_images="2"):
    return [
        "--config-file", INSTANT_CONFIG,
        "--output", str(output),
        "--num-images", num_images,
        "--random-weights",
        "MODEL.WEIGHTS", "",
        "DATASETS.SYNTHETIC.ROOT", synthetic_root,
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "2",
        *opts,
    ]  # fmt: skip


class FixedDetector(nn.Module):
    """A person detector finding one person, the image's centre half, in every image."""

    def forward(self, batched_inputs, input_format):
        proposals = []
        for x in batched_inputs:
            height, width = x["image"].shape[-2:]
            found = Instances((height, width))
            found.proposal_boxes = Boxes(torch.tensor([[width / 4, height / 4, 3 * width / 4, 3 * height / 4]]))
            found.scores = torch.ones(1)
            proposals.append(found)
        return proposals


def test_detector_box_source_runs_the_person_detector_beside_the_model(tmp_path, synthetic_root, capsys, monkeypatch):
    """The friction: KeyError "image 1 has no 'proposals'" (the detector was never built)."""
    import depotr.engine.detector as person_detector

    built = []
    monkeypatch.setattr(
        person_detector,
        "build_person_detector",
        lambda cfg, random_weights=False: built.append((cfg.MODEL.DEVICE, random_weights)) or FixedDetector(),
    )
    argv = _argv(tmp_path / "vis", synthetic_root, "MODEL.DEPOTR.TEST_BOX_SOURCE", "detector", "TEST.FLIP", "False")
    assert run_main(load_script("tools/visualize_predictions.py").main, argv) == 0
    assert built == [("cpu", True)]  # on the CPU, --random-weights passed on
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "vis")) == ["1_000000.png", "2_000001.png"]
    assert f"{tmp_path / 'vis' / '1_000000.png'}: 1 persons" in out


def test_outputs_are_named_by_image_id():
    tool = load_script("tools/visualize_predictions.py")
    names = [tool.output_name({"file_name": f"{folder}/frame.jpg", "image_id": i}) for i, folder in enumerate("ab")]
    assert names == ["0_frame.png", "1_frame.png"]  # the same file name in two folders: two PNGs
    assert tool.output_name({"file_name": "x/y z.jpg", "image_id": "cam/1"}) == "cam_1_y_z.png"


def test_a_failed_write_is_an_error_naming_the_path(tmp_path, synthetic_root, monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))
    argv = _argv(tmp_path / "vis", synthetic_root, "MODEL.DEPOTR.TEST_BOX_SOURCE", "whole_image", num_images="1")
    with pytest.raises(OSError, match=f"cannot encode {tmp_path / 'vis' / '1_000000.png'}"):
        run_main(load_script("tools/visualize_predictions.py").main, argv)
    assert os.listdir(tmp_path / "vis") == []  # nothing half-written


@pytest.mark.parametrize("num_images", ["0", "-1"])
def test_num_images_below_one_is_refused(tmp_path, capsys, num_images):
    with pytest.raises(SystemExit) as e:
        run_main(load_script("tools/visualize_predictions.py").main, _argv(tmp_path, "", num_images=num_images))
    assert e.value.code == 2
    assert f"--num-images must be >= 1, got {num_images}" in capsys.readouterr().err


def test_an_output_that_cannot_be_a_folder_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    """The friction: NotADirectoryError from os.makedirs after the model was built and the test
    set rendered."""
    import depotr.export

    monkeypatch.setattr(depotr.export, "build_cpu_model", lambda *a, **k: pytest.fail("the model was built"))
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as e:
        run_main(load_script("tools/visualize_predictions.py").main, _argv(tmp_path / "file" / "vis", ""))
    assert e.value.code == 2
    assert f"--output {tmp_path / 'file' / 'vis'}: it cannot be made" in capsys.readouterr().err


def test_records_without_annotations_give_the_prediction_panel_alone(tmp_path, synthetic_root, capsys, monkeypatch):
    """The friction: a test set without ground truth (no "annotations" key) was KeyError 'instances'."""
    import cv2

    from detectron2.data import DatasetCatalog

    get = DatasetCatalog.get

    def without_annotations(name):
        return [{k: v for k, v in d.items() if k != "annotations"} for d in get(name)]

    tool = load_script("tools/visualize_predictions.py")
    argv = _argv(tmp_path / "gt", synthetic_root, "MODEL.DEPOTR.TEST_BOX_SOURCE", "whole_image", num_images="1")
    torch.manual_seed(0)  # the same random weights in both runs
    assert run_main(tool.main, argv) == 0
    both = cv2.imread(str(tmp_path / "gt" / "1_000000.png"))
    monkeypatch.setattr(DatasetCatalog, "get", without_annotations)
    argv = _argv(tmp_path / "vis", synthetic_root, "MODEL.DEPOTR.TEST_BOX_SOURCE", "whole_image", num_images="1")
    torch.manual_seed(0)
    assert run_main(tool.main, argv) == 0
    path = tmp_path / "vis" / "1_000000.png"
    assert f"{path}: 1 persons (no ground truth: predictions only)" in capsys.readouterr().out
    alone = cv2.imread(str(path))
    assert alone.shape[1] * 2 == both.shape[1]
    right = both[:, alone.shape[1] :]
    assert alone.shape == right.shape  # one panel of the two
    # the same image and persons as the prediction panel (the Visualizer picks random box colours)
    assert (alone != right).any(2).mean() < 0.05 < (alone != both[:, : alone.shape[1]]).any(2).mean()


def test_an_unregistered_test_set_is_one_error_line_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    """The friction: a custom run's config.yaml (its dataset registered by the user's training
    script) gave a KeyError traceback listing every registered dataset, after the model was built."""
    import depotr.export

    monkeypatch.setattr(depotr.export, "build_cpu_model", lambda *a, **k: pytest.fail("the model was built"))
    argv = _argv(tmp_path / "vis", str(tmp_path / "syn"), "DATASETS.TEST", "('dogs_val',)")
    assert run_main(load_script("tools/visualize_predictions.py").main, argv) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert error == [
        "error: DATASETS.TEST: dataset 'dogs_val' is not registered (your own keypoint files are registered by "
        "your script calling register_keypoint_dataset, which then runs the command: docs/datasets.md)"
    ]
