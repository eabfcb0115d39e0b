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
from torchvision.ops import roi_align

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from depotr.cli import run_main
from depotr.config import load_depotr_config
from depotr.export import (
    EXPORT_FORMATS,
    EXPORT_INPUTS,
    IMAGE_OUTPUT_FILES,
    MIN_OPSET,
    OUTPUT_FILES,
    CropKeypointPredictor,
    ExportCheckError,
    ExportReport,
    ImageKeypointPredictor,
    build_crop_keypoint_predictor,
    example_image,
    export_image_predictor,
    export_predictor,
    keypoint_errors,
    predictor_keypoints,
    random_crops,
    reference_msda_backend,
    reference_predictor,
    run_onnx,
    run_torchscript,
)
from depotr.layers import BACKEND_ENV_VAR
from depotr.modeling.crops import MAX_SAMPLING_RATIO, box_crop_params, crop_images, crop_to_image
from tests.conftest import load_script
from tests.modeling.test_person_detector import _detector_cfg

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


# ---------------------------------------------------------------------------------------------
# Image and boxes in -> keypoints in image pixels (issue 23 item 1), and 0 persons


def _tool():
    return load_script("tools/export_model.py")


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    """tools/export_model.py --inputs image (both formats) on seeded DePOTR-HM weights with
    heatmaps scaled as a trained model's: (output folder, weights path, the formats exported)."""
    formats = ["torchscript"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
    folder = tmp_path_factory.mktemp("image_export")
    weights = folder / "weights.pth"
    torch.save({"model": _seeded_model(()).state_dict()}, weights)
    argv = ["--config-file", INSTANT_CONFIG, "--output", str(folder / "out"), "--inputs", "image"]
    argv += ["--format", *formats, "MODEL.WEIGHTS", str(weights)]  # bare overrides, as train_net takes them
    status = run_main(_tool().main, argv)
    assert status == 0
    return folder / "out", weights, formats


def test_image_export_matches_the_predictor_on_other_images_and_boxes(image_export, capsys):
    folder, weights, formats = image_export
    assert sorted(os.listdir(folder)) == sorted(IMAGE_OUTPUT_FILES[fmt] for fmt in formats)
    predictor = reference_predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)]))
    image = example_image(150, 170, seed=7)
    # One box inside, one past the right border, one tiny, one clipped to the top-left corner.
    boxes = torch.tensor([[20.0, 10.0, 90.0, 140.0], [120.0, 30.0, 200.0, 120.0], [60, 60, 66, 70], [-20, -5, 40, 50]])
    expected = predictor_keypoints(predictor, image, boxes)
    assert torch.isfinite(expected).all()  # the Predictor kept every box
    for fmt in formats:
        actual = RUNNERS[fmt](str(folder / IMAGE_OUTPUT_FILES[fmt]), torch.from_numpy(image), boxes)
        coord_error, score_error = keypoint_errors(actual, expected)
        print(f"{fmt} image export vs Predictor: {coord_error:.3g} px, {score_error:.3g} score")
        # cropping with cv2.warpAffine moved keypoints by up to 0.9 px and scores by 0.04
        assert coord_error < 1e-3 and score_error < 1e-4, (fmt, coord_error, score_error)
        empty = RUNNERS[fmt](str(folder / IMAGE_OUTPUT_FILES[fmt]), torch.from_numpy(image), torch.zeros(0, 4))
        assert empty.shape == (0, NUM_KEYPOINTS, 3)


def test_image_export_self_check_is_against_the_predictor(image_export):
    """The keypoints of the exported module's eager run are those of the Predictor (the check's
    reference) to float rounding, with a model whose heatmaps depend on the image."""
    _, weights, _ = image_export
    predictor = reference_predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)]))
    module = ImageKeypointPredictor.from_model(predictor.model, predictor.input_format).eval()
    image = example_image(120, 90, seed=3)
    boxes = torch.tensor([[10.0, 10.0, 80.0, 110.0], [30.0, 0.0, 60.0, 50.0]])
    with torch.no_grad():
        actual = module(torch.from_numpy(image), boxes)
    expected = predictor_keypoints(predictor, image, boxes)
    assert keypoint_errors(actual, expected)[0] < 1e-3
    shifted = predictor_keypoints(predictor, image, boxes + 8.0)  # other boxes give other keypoints
    assert (shifted[..., :2] - expected[..., :2]).abs().max() > 1.0


def test_image_torchscript_file_needs_torchvision_and_the_tool_says_so(image_export):
    """A plain ``torch.jit.load`` of image_model.ts fails (torchvision's RoIAlign op is not
    registered); after ``import torchvision`` it runs. The tool prints how to load it."""
    folder, _, _ = image_export
    path = str(folder / IMAGE_OUTPUT_FILES["torchscript"])
    run = "torch.zeros(40, 30, 3, dtype=torch.uint8), torch.tensor([[2.0, 3, 20, 35]])"
    load = f"m = torch.jit.load({path!r}); print(tuple(m({run}).shape))"
    plain = subprocess.run([sys.executable, "-c", f"import torch; {load}"], capture_output=True, text=True)
    assert plain.returncode != 0 and "torchvision::roi_align" in plain.stderr
    imported = subprocess.run(
        [sys.executable, "-c", f"import torch, torchvision; {load}"], capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == f"(1, {NUM_KEYPOINTS}, 3)"
    tool = _tool()
    assert "import torchvision" in tool.TORCHSCRIPT_IMAGE_NOTE and "import torchvision" in tool.__doc__


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_readme_onnx_runtime_example_runs(image_export, tmp_path):
    """The README's ONNX Runtime snippet, run as written on the exported file and a photo."""
    folder, weights, _ = image_export
    readme = open(os.path.join(REPO, "README.md")).read()
    snippet = re.search(r"<!-- onnx-runtime-example -->\s*```python\n(.*?)```", readme, re.DOTALL)[1]
    image = example_image(200, 150, seed=11)
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    code = snippet.replace("export/image_model.onnx", str(folder / "image_model.onnx"))
    code = code.replace("photo.jpg", str(tmp_path / "photo.png"))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    boxes = torch.from_numpy(namespace["boxes"])
    predictor = reference_predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)]))
    expected = predictor_keypoints(predictor, image, boxes)
    assert keypoint_errors(torch.from_numpy(namespace["keypoints"]), expected)[0] < 1e-3


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_crops_export_takes_zero_crops(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    predictor = _seeded_predictor("regression")
    report = export_predictor(predictor, fmt, str(tmp_path / OUTPUT_FILES[fmt]), EXPORT_BATCH, TOLERANCE)
    assert 0 in report.check_batches
    keypoints = RUNNERS[fmt](report.path, random_crops(0, predictor.crop_size, seed=1))
    assert keypoints.shape == (0, NUM_KEYPOINTS, 3)


def test_tool_choices_are_the_export_modules():
    tool = _tool()
    assert (tool.EXPORT_FORMATS, tool.EXPORT_INPUTS, tool.MIN_OPSET) == (EXPORT_FORMATS, EXPORT_INPUTS, MIN_OPSET)
    assert (tool.OUTPUT_FILES, tool.IMAGE_OUTPUT_FILES) == (OUTPUT_FILES, IMAGE_OUTPUT_FILES)


def test_export_without_weights_is_refused_unless_random_weights_are_asked_for(tmp_path, capsys):
    tool = _tool()
    argv = ["--config-file", INSTANT_CONFIG, "--output", str(tmp_path / "out"), "--format", "torchscript"]
    assert run_main(tool.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MODEL.WEIGHTS is empty") and "--random-weights" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    argv += ["--opts", "MODEL.WEIGHTS", str(tmp_path / "missing.pth")]
    assert run_main(tool.main, argv) == 2
    assert "missing.pth: no such checkpoint file" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["a file", "under a file", "model.ts a folder"])
def test_an_output_that_cannot_be_written_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch, case):
    """The friction: --output naming an existing file was FileExistsError's traceback from
    os.makedirs, after the model was built and its weights loaded."""
    import depotr.export

    monkeypatch.setattr(depotr.export, "build_crop_keypoint_predictor", lambda *a: pytest.fail("the model was built"))
    (tmp_path / "file").write_text("a file\n")
    output, problem = {
        "a file": (tmp_path / "file", "it is not a folder"),
        "under a file": (
            tmp_path / "file" / "export",
            f"it cannot be made: Not a directory ({tmp_path / 'file' / 'export'})",
        ),
        "model.ts a folder": (tmp_path / "export", "model.ts: it is a folder"),
    }[case]
    (tmp_path / "export" / "model.ts").mkdir(parents=True)
    argv = ["--config-file", INSTANT_CONFIG, "--output", str(output), "--format", "torchscript", "--random-weights"]
    with pytest.raises(SystemExit) as exit_status:
        _tool().main(argv)
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f" error: --output {output}: {problem}")
    assert (tmp_path / "file").read_text() == "a file\n"


def test_image_export_reference_predictor_runs_in_float32():
    # The exported graph is float32: a config asking for bfloat16 inference must not make the
    # export's check compare against bfloat16 keypoints.
    cfg = load_depotr_config(INSTANT_CONFIG, ["TEST.PRECISION", "bfloat16"])
    predictor = reference_predictor(cfg, random_weights=True)
    assert predictor.model.test_precision == torch.float32
    assert predictor.model.oks_nms_thresh == 1.0 and cfg.TEST.PRECISION == "bfloat16"  # the caller's cfg kept


def test_image_export_builds_no_person_detector(tmp_path):
    """The friction: with a person detector in the config (MODEL.DEPOTR.DETECTOR) the image
    export's reference Predictor built it, though the export never runs it: without detector
    weights an error (the crops export of the same config worked), with them the detector was
    loaded (or downloaded) for nothing."""
    weights = tmp_path / "pose.pth"
    torch.save({"model": _seeded_model(()).state_dict()}, weights)
    cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)])
    cfg.MODEL.DEPOTR.DETECTOR = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    predictor = reference_predictor(cfg)
    assert predictor.detector is None
    assert cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE.endswith("detector.yaml")  # the caller's cfg kept


# ---------------------------------------------------------------------------------------------
# TorchScript files called with grad mode on; boxes over crop_images' sampling-ratio cap


@pytest.fixture(scope="module")
def torchscript_crops_file(tmp_path_factory) -> str:
    predictor = _seeded_predictor("regression")
    path = tmp_path_factory.mktemp("crops") / OUTPUT_FILES["torchscript"]
    return export_predictor(predictor, "torchscript", str(path), EXPORT_BATCH).path


@pytest.mark.parametrize(
    "scale, channels, batched",
    [(2, 3, True), (1, 4, True), (1, 3, False)],
    ids=["twice-the-size", "4-channels", "no-n"],
)
def test_wrong_crops_are_refused_naming_the_expected_shape(torchscript_crops_file, scale, channels, batched):
    """Crops of another size or channel count failed deep inside the traced network ("The size of
    tensor a (256) must match the size of tensor b (65) at non-singleton dimension 1")."""
    predictor = _seeded_predictor("regression")
    height, width = predictor.crop_size
    shape = (1,) * batched + (channels, scale * height, scale * width)
    message = rf"crops must be \(N, 3, {height}, {width}\) \(N, C, H, W\), got \[{', '.join(map(str, shape))}\]"
    with pytest.raises(torch.jit.Error, match=message):
        torch.jit.load(torchscript_crops_file)(torch.zeros(shape))
    with pytest.raises(ValueError, match=message):
        _eager(predictor, torch.zeros(shape))


@pytest.mark.parametrize(
    "image_shape, boxes_shape, message",
    [
        ((96, 72, 4), (1, 4), r"image must be \(H, W, 3\) uint8 BGR, got \[96, 72, 4\]"),
        ((3, 96, 72), (1, 4), r"image must be \(H, W, 3\) uint8 BGR, got \[3, 96, 72\]"),
        ((96, 72, 3), (1, 5), r"boxes must be \(N, 4\) XYXY, got \[1, 5\]"),
        ((96, 72, 3), (4,), r"boxes must be \(N, 4\) XYXY, got \[4\]"),
    ],
    ids=["rgba", "channels-first", "five-columns", "one-box-unbatched"],
)
def test_image_torchscript_file_refuses_a_wrong_image_or_boxes_shape(image_export, image_shape, boxes_shape, message):
    """Both failed deep inside the traced network ("The size of tensor a (4) must match the size of
    tensor b (3) at non-singleton dimension 0")."""
    folder, _, _ = image_export
    module = torch.jit.load(str(folder / IMAGE_OUTPUT_FILES["torchscript"]))
    boxes = torch.tensor([10.0, 8.0, 50.0, 90.0, 1.0])[: boxes_shape[-1]].expand(boxes_shape)
    with pytest.raises(torch.jit.Error, match=message):
        module(torch.zeros(image_shape, dtype=torch.uint8), boxes)


def _run_with_grad(module, *inputs: torch.Tensor) -> torch.Tensor:
    """A user's call of a loaded file: grad mode on (no torch.no_grad())."""
    assert torch.is_grad_enabled()
    return module(*inputs)


def test_torchscript_crops_file_runs_repeatedly_with_grad_mode_on(tmp_path):
    """Traced with parameters requiring grad, the file ran once, then raised "a view of a leaf
    Variable that requires grad is being used in an in-place operation"; the caller's model keeps
    its requires_grad flags."""
    predictor = _seeded_predictor("regression")
    flags = [p.requires_grad for p in predictor.parameters()]
    assert any(flags)
    report = export_predictor(predictor, "torchscript", str(tmp_path / OUTPUT_FILES["torchscript"]), EXPORT_BATCH)
    assert [p.requires_grad for p in predictor.parameters()] == flags
    module = torch.jit.load(report.path)
    crops = random_crops(CHECK_BATCH, predictor.crop_size, seed=42)
    expected = _eager(predictor, crops)
    for _ in range(3):
        coord_error, score_error = keypoint_errors(_run_with_grad(module, crops).detach(), expected)
        assert coord_error < TOLERANCE and score_error < TOLERANCE


def test_torchscript_image_file_runs_repeatedly_with_grad_mode_on(image_export):
    folder, _, _ = image_export
    module = torch.jit.load(str(folder / IMAGE_OUTPUT_FILES["torchscript"]))
    image = torch.from_numpy(example_image(150, 170, seed=7))
    boxes = torch.tensor([[20.0, 10.0, 90.0, 140.0], [60, 60, 66, 70]])
    first = _run_with_grad(module, image, boxes).detach()
    for _ in range(2):
        assert torch.equal(_run_with_grad(module, image, boxes).detach(), first)


def test_self_check_runs_the_file_twice_with_grad_mode_on(tmp_path, monkeypatch):
    """Tracing the caller's module as it is (parameters requiring grad) gives a file that fails
    on its second call: the check catches it and leaves no file."""
    monkeypatch.setattr("depotr.export._frozen_copy", lambda module: module)
    path = tmp_path / OUTPUT_FILES["torchscript"]
    with pytest.raises(ExportCheckError, match="fails when run"):
        export_predictor(_seeded_predictor("regression"), "torchscript", str(path), EXPORT_BATCH, TOLERANCE)
    assert os.listdir(tmp_path) == []


def test_image_export_matches_the_predictor_on_boxes_over_the_sampling_cap(image_export):
    """crop_images caps the adaptive sampling ratio at MAX_SAMPLING_RATIO; roi_align's adaptive
    one has none (a 3000-px box moved the R18 model's keypoints by 2.2 px). Errors in crop pixels, as a
    crop-pixel rounding error (DARK's) grows with the box in image pixels."""
    folder, weights, formats = image_export
    predictor = reference_predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)]))
    model = predictor.model
    image = example_image(1100, 900, seed=5)
    # Under the cap, over it (crop box 1333x1000 = 20.8 x 64x48), under it again: rows kept in order.
    boxes = torch.tensor([[20.0, 10.0, 90.0, 140.0], [50.0, 20.0, 850.0, 1080.0], [300, 400, 420, 600]])
    params = box_crop_params(boxes, model.crop_size, model.crop_padding)
    scale = params[:, 3] / model.crop_size[0]  # image pixels per crop pixel
    assert model.crop_sampling_ratio == 0 and (scale > MAX_SAMPLING_RATIO).tolist() == [False, True, False]
    expected = predictor_keypoints(predictor, image, boxes)
    assert torch.isfinite(expected).all()
    for fmt in formats:
        actual = RUNNERS[fmt](str(folder / IMAGE_OUTPUT_FILES[fmt]), torch.from_numpy(image), boxes)
        crop_error = ((actual - expected)[..., :2].abs() / scale[:, None, None]).max().item()
        score_error = (actual - expected)[..., 2].abs().max().item()
        print(f"{fmt} image export vs Predictor, boxes over the cap: {crop_error:.3g} crop px, {score_error:.3g}")
        assert crop_error < TOLERANCE and score_error < 1e-4, (fmt, crop_error, score_error)


def test_image_export_self_check_has_a_box_over_the_sampling_cap(image_export, tmp_path, monkeypatch):
    """Cropping with roi_align's uncapped adaptive ratio, the export fails its own check."""
    _, weights, _ = image_export
    predictor = reference_predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(weights)]))

    def uncapped(self, image, rois, params):
        return roi_align(image, rois, self.crop_predictor.crop_size, 1.0, 0, aligned=True)

    monkeypatch.setattr(ImageKeypointPredictor, "_crop", uncapped)
    path = tmp_path / IMAGE_OUTPUT_FILES["torchscript"]
    with pytest.raises(ExportCheckError, match="disagrees with the Predictor"):
        export_image_predictor(predictor, "torchscript", str(path))
    assert not path.exists()
