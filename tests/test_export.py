"""depotr.export and tools/export_model.py: crops in -> keypoints out, as TorchScript and ONNX.

Models are the instant config (ResNet-18, d = 64, one encoder and one decoder layer, 64x48
crops) with seeded random weights; every export is traced on EXPORT_BATCH crops and checked on
CHECK_BATCH crops.
"""

import functools
import importlib.util
import math
import os
import re
import subprocess
import sys
from typing import Sequence, Tuple

import pytest
import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from depotr.config import load_depotr_config
from depotr.export import (
    MIN_OPSET,
    OUTPUT_FILES,
    CropKeypointPredictor,
    ExportCheckError,
    ExportReport,
    build_crop_keypoint_predictor,
    export_predictor,
    keypoint_errors,
    random_crops,
    reference_msda_backend,
    run_onnx,
    run_torchscript,
)
from depotr.layers import BACKEND_ENV_VAR
from depotr.modeling.crops import box_crop_params, crop_images, crop_to_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
TOLERANCE = 1e-3  # crop pixels for (x, y); score units for the score
EXPORT_BATCH = 2
CHECK_BATCH = 5
NUM_KEYPOINTS = 17
# Variants of the instant config exported in-process (the plain instant config, DePOTR-HM with
# the dot-product decoder, flip test and DARK decoding, goes through the CLI in
# test_cli_exports_both_formats).
VARIANTS = {
    "heatmap-dark-flip": ("TEST.HEATMAP_REFINE", "dark", "TEST.FLIP", "True"),
    "heatmap-deconv-shift": ("MODEL.DEPOTR.HEATMAP.DECODER", "deconv", "TEST.HEATMAP_REFINE", "shift"),
    "regression": ("MODEL.DEPOTR.HEAD", "regression"),
    "regression-rle-flip": (
        "MODEL.DEPOTR.HEAD",
        "regression",
        "MODEL.DEPOTR.REGRESSION.LOSS",
        "rle",
        "TEST.FLIP",
        "True",
    ),
}
RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}


def _scale_heatmaps(model: nn.Module) -> None:
    """SimpleBaseline's N(0, 0.001) initialisation of the deconvolutions and the last conv makes
    random-weight heatmaps ~1e-7, whose logs (~ -16) leave float32 DARK offsets with up to ~1e-4
    heatmap pixels of rounding noise. Scales the last conv so heatmaps span ~1, as a trained
    model's. No-op for the regression branch and the dot-product heatmap head (its heatmaps
    already span ~1)."""
    if hasattr(model.keypoint_branch.head, "predictor"):
        with torch.no_grad():
            model.keypoint_branch.head.predictor.weight.mul_(1e6)


def _seeded_model(opts: Sequence[str]) -> nn.Module:
    cfg = load_depotr_config(INSTANT_CONFIG, list(opts) + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _scale_heatmaps(model)
    return model


@functools.lru_cache(maxsize=None)
def _seeded_predictor(variant: str) -> CropKeypointPredictor:
    return CropKeypointPredictor.from_model(_seeded_model(VARIANTS[variant])).eval()


def _eager(predictor: CropKeypointPredictor, crops: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return predictor(crops)


@pytest.fixture(
    scope="module",
    params=[(variant, fmt) for variant in VARIANTS for fmt in ("torchscript", "onnx")],
    ids="-".join,
)
def exported(request, tmp_path_factory) -> Tuple[CropKeypointPredictor, ExportReport]:
    """(predictor, report) of one variant exported in one format."""
    variant, fmt = request.param
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    predictor = _seeded_predictor(variant)
    path = tmp_path_factory.mktemp(variant) / OUTPUT_FILES[fmt]
    return predictor, export_predictor(predictor, fmt, str(path), EXPORT_BATCH, TOLERANCE)


def test_export_matches_pytorch_on_another_batch_size(exported):
    predictor, report = exported
    assert os.path.isfile(report.path)
    assert EXPORT_BATCH not in report.check_batches
    assert report.coord_error_px <= TOLERANCE and report.score_error <= TOLERANCE
    crops = random_crops(CHECK_BATCH, predictor.crop_size, seed=42)
    expected = _eager(predictor, crops)
    actual = RUNNERS[report.format](report.path, crops)
    assert actual.shape == (CHECK_BATCH, NUM_KEYPOINTS, 3)
    coord_error, score_error = keypoint_errors(actual, expected)
    assert coord_error < TOLERANCE, f"{report.format}: max |dx|, |dy| = {coord_error} px"
    assert score_error < TOLERANCE, f"{report.format}: max |dscore| = {score_error}"


@pytest.mark.parametrize("exported", [(variant, "onnx") for variant in VARIANTS], indirect=True, ids="-".join)
def test_onnx_file_declares_opset_and_dynamic_batch(exported):
    onnx = pytest.importorskip("onnx")
    _, report = exported
    model = onnx.load(report.path)
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    assert opsets[""] >= MIN_OPSET
    (crops,), (keypoints,) = model.graph.input, model.graph.output
    crops_dims = [d.dim_param or d.dim_value for d in crops.type.tensor_type.shape.dim]
    keypoints_dims = [d.dim_param or d.dim_value for d in keypoints.type.tensor_type.shape.dim]
    assert (crops.name, crops_dims) == ("crops", ["N", 3, 64, 48])
    # The exporter's shape inference leaves K symbolic too; the runs check (N, K, 3).
    assert (keypoints.name, len(keypoints_dims), keypoints_dims[0]) == ("keypoints", 3, "N")


def test_keypoint_errors_are_infinite_for_mismatched_or_non_finite_outputs():
    expected = torch.zeros(2, NUM_KEYPOINTS, 3)
    actual = expected.clone()
    actual[1, 3] = torch.tensor([0.5, -0.25, 0.125])
    assert keypoint_errors(actual, expected) == (0.5, 0.125)
    assert keypoint_errors(actual[:1], expected) == (math.inf, math.inf)
    actual[0, 0, 2] = float("nan")
    assert keypoint_errors(actual, expected) == (math.inf, math.inf)


def test_failed_check_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / OUTPUT_FILES["torchscript"]
    path.write_bytes(b"previous export")
    with pytest.raises(ExportCheckError, match="left as it was"):
        # A negative tolerance fails even an exact export.
        export_predictor(_seeded_predictor("regression"), "torchscript", str(path), EXPORT_BATCH, tolerance=-1.0)
    assert path.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == [path.name]


def test_predictor_on_raw_crops_matches_meta_arch_inference():
    """Raw 0..255 crops through the predictor (normalisation and flip test inside) give the
    keypoints of ``TopDownPoseEstimator.inference``, which normalises the image before cropping."""
    model = _seeded_model(("MODEL.DEPOTR.HEAD", "regression", "TEST.FLIP", "True"))
    predictor = CropKeypointPredictor.from_model(model).eval()
    assert predictor.flip_indices == model.flip_indices
    image = torch.randint(0, 256, (3, 160, 120), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    instances = Instances((160, 120))
    instances.gt_boxes = Boxes(torch.tensor([[30.0, 20.0, 80.0, 110.0]]))
    with torch.no_grad():
        (result,) = model.inference([{"image": image, "image_id": 0, "instances": instances}], do_postprocess=False)
    params = box_crop_params(instances.gt_boxes.tensor, predictor.crop_size, model.crop_padding)
    corners = torch.cat([params[:, :2] - params[:, 2:4] / 2, params[:, :2] + params[:, 2:4] / 2], dim=1)
    assert (corners[:, :2] >= 0).all() and corners[0, 2] <= 120 and corners[0, 3] <= 160  # no outside read
    crops = crop_images([image], [params], predictor.crop_size, model.crop_sampling_ratio)
    keypoints = crop_to_image(_eager(predictor, crops), params, predictor.crop_size)
    coord_error, score_error = keypoint_errors(keypoints, result["instances"].pred_keypoints)
    assert coord_error < TOLERANCE and score_error < TOLERANCE


@pytest.mark.parametrize("previous", [None, "compiled"])
def test_reference_msda_backend_restores_the_environment(monkeypatch, previous):
    if previous is None:
        monkeypatch.delenv(BACKEND_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(BACKEND_ENV_VAR, previous)
    with reference_msda_backend():
        assert os.environ[BACKEND_ENV_VAR] == "reference"
    assert os.environ.get(BACKEND_ENV_VAR) == previous


def test_cli_exports_both_formats(tmp_path):
    """tools/export_model.py end to end on the instant config with weights from MODEL.WEIGHTS."""
    formats = ["torchscript"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
    weights = tmp_path / "weights.pth"
    torch.save({"model": _seeded_model(()).state_dict()}, weights)
    output = tmp_path / "export"
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "export_model.py"),
            "--config-file",
            INSTANT_CONFIG,
            "--output",
            str(output),
            "--format",
            *formats,
            "--batch",
            str(EXPORT_BATCH),
            "--opts",
            "MODEL.WEIGHTS",
            str(weights),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(os.listdir(output)) == sorted(OUTPUT_FILES[fmt] for fmt in formats)
    expected_predictor = build_crop_keypoint_predictor(
        load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)])
    )
    crops = random_crops(CHECK_BATCH, expected_predictor.crop_size, seed=42)
    expected = _eager(expected_predictor, crops)
    for fmt in formats:
        path = output / OUTPUT_FILES[fmt]
        line = re.search(
            rf"^{fmt}: {re.escape(str(path))} .*: (\S+) px \(x, y\), (\S+) \(score\)$", completed.stdout, re.MULTILINE
        )
        assert line, completed.stdout
        assert float(line[1]) < TOLERANCE and float(line[2]) < TOLERANCE
        coord_error, score_error = keypoint_errors(RUNNERS[fmt](str(path), crops), expected)
        assert coord_error < TOLERANCE and score_error < TOLERANCE, (fmt, coord_error, score_error)
