"""Export of DePOTR to TorchScript and ONNX: person crops in -> keypoints out, or an image and its
person boxes in -> keypoints in image pixels out.

Shape letters: N persons (crops), K keypoints, (H, W) the crop size (``INPUT.CROP_SIZE``).

:class:`CropKeypointPredictor` (:func:`export_predictor`): pixel normalisation, the keypoint
branch, its flip test when ``TEST.FLIP`` is on, and the branch's ``decode`` — everything
``TopDownPoseEstimator.inference`` computes between cropping and ``crop_to_image``; the box ->
crop step and the crop -> image transform stay with the caller.
:class:`ImageKeypointPredictor` (:func:`export_image_predictor`) adds both around it (boxes
clipped and grown to the crop, ``torchvision.ops.roi_align(aligned=True)`` = ONNX RoiAlign
"half_pixel", ``crop_to_image``) and is checked against ``depotr.Predictor``. Both take N = 0
(:meth:`CropKeypointPredictor.predict_normalised`).

How each format is produced (:func:`export_predictor`):

* TorchScript (``model.ts``): ``torch.jit.trace``. The branch has no data-dependent control flow;
  the crop size is fixed by the trace, the batch size N is not (sizes are traced as graph values).
* ONNX (``model.onnx``, opset >= 17): ``torch.onnx.export(..., dynamo=False)``, the TorchScript-
  based exporter, with a dynamic axis "N" on the input "crops" and the output "keypoints". The
  default torch.export-based exporter fails on this model: the deformable transformer reads the
  level sizes on the host (``spatial_shapes.tolist()``), a data-dependent value for torch.export.

Both trace with multi-scale deformable attention forced to its PyTorch reference (one
``F.grid_sample`` per level; ONNX GridSample, opset 16+) by ``DEPOTR_MSDA_BACKEND=reference``
(:func:`reference_msda_backend`), so the files need neither ``depotr._C`` nor a custom ONNX op.
All heatmap refinements (``TEST.HEATMAP_REFINE`` none / shift / DARK) trace and export as they
are. Each file is written to a temporary name, loaded back, compared with the eager module on
batch sizes other than the traced one, and only then moved into place (``os.replace``).
"""

import contextlib
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from detectron2.config import CfgNode
from detectron2.modeling import build_model

from .config import log_device
from .engine.checkpoint import DePOTRCheckpointer, weights_to_load
from .file_io import atomic_output_path
from .layers import BACKEND_ENV_VAR
from .modeling.crops import box_crop_params, crop_to_image
from .modeling.tta import predict_crop_keypoints
from .predictor import Predictor

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_INPUTS",
    "IMAGE_OUTPUT_FILES",
    "ImageKeypointPredictor",
    "build_image_keypoint_predictor",
    "build_cpu_model",
    "example_image",
    "export_image_predictor",
    "predictor_keypoints",
    "reference_predictor",
    "MIN_OPSET",
    "OUTPUT_FILES",
    "CropKeypointPredictor",
    "ExportCheckError",
    "ExportReport",
    "build_crop_keypoint_predictor",
    "export_predictor",
    "keypoint_errors",
    "random_crops",
    "reference_msda_backend",
    "run_onnx",
    "run_torchscript",
]

EXPORT_FORMATS = ("torchscript", "onnx")
# Format -> file name written in the output folder.
OUTPUT_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
# ONNX opset: 16 is the first with GridSample; 17 the first with LayerNormalization.
MIN_OPSET = 17
_ONNX_INPUT, _ONNX_OUTPUT = "crops", "keypoints"
# What an export takes: person crops, or an image and its person boxes.
EXPORT_INPUTS = ("crops", "image")
# The image-in export (export_image_predictor): format -> file name, and its ONNX input and
# output names -> dynamic axes.
IMAGE_OUTPUT_FILES = {"torchscript": "image_model.ts", "onnx": "image_model.onnx"}
_IMAGE_AXES = {"image": {0: "H", 1: "W"}, "boxes": {0: "N"}, _ONNX_OUTPUT: {0: "N"}}


class CropKeypointPredictor(nn.Module):
    """N crops, K keypoints, (H, W) crop size. Raw person crops -> keypoints in crop pixels."""

    def __init__(
        self,
        branch: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        flip_indices: Optional[Sequence[int]] = None,
    ):
        """
        Args:
            branch: a keypoint branch (``forward``, ``decode``, ``flip_back``, ``crop_size``).
            pixel_mean, pixel_std: (C,) per-channel normalisation of 0..255 pixels.
            flip_indices: (K,) mirror partner of each keypoint: run the flip test; None: don't.
        """
        super().__init__()
        self.branch = branch
        self.crop_size: Tuple[int, int] = tuple(int(s) for s in branch.crop_size)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.flip_indices = None if flip_indices is None else [int(i) for i in flip_indices]

    @classmethod
    def from_model(cls, model: nn.Module) -> "CropKeypointPredictor":
        """The predictor of a ``TopDownPoseEstimator``: its branch (shared, not copied), pixel
        statistics and flip test setting (``TEST.FLIP``)."""
        return cls(
            model.keypoint_branch,
            model.pixel_mean.flatten().tolist(),
            model.pixel_std.flatten().tolist(),
            model.flip_indices if model.test_flip else None,
        )

    def forward(self, crops: Tensor) -> Tensor:
        """
        Args:
            crops: (N, 3, H, W) float32 pixel values in 0..255, channels in ``INPUT.FORMAT``
                order, N >= 0: the person boxes of the meta-architecture's input images,
                resampled to (H, W) (``depotr.modeling.crops.crop_images``). Where a crop reaches
                outside its image, fill it with ``PIXEL_MEAN`` (what the model's crops read there).
        Returns:
            (N, K, 3): (x, y) in continuous crop pixels (pixel i covers [i, i + 1)) and the
            branch's score (heatmap maximum, or sigmoid of the regression confidence).
        """
        return self.predict_normalised((crops - self.pixel_mean) / self.pixel_std)

    def predict_normalised(self, crops: Tensor) -> Tensor:
        """:meth:`forward` of normalised crops (N, 3, H, W), N >= 0. The branch always runs on at
        least one crop: for N = 0 on one zero crop whose result is dropped, as the exported
        graphs' reshapes cannot take an empty batch (an ONNX Reshape reads a 0 in its target
        shape as "keep this dimension")."""
        num = torch._shape_as_tensor(crops)[0]
        padded = torch.cat([crops, crops.new_zeros((1,) + tuple(crops.shape[1:]))])
        padded = padded.index_select(0, torch.arange(torch.clamp(num, min=1)))
        keypoints = predict_crop_keypoints(self.branch, padded, self.flip_indices)
        return keypoints.index_select(0, torch.arange(num))


def build_crop_keypoint_predictor(cfg: CfgNode, random_weights: bool = False) -> CropKeypointPredictor:
    """Builds ``cfg``'s model on the CPU with Detectron2's ``build_model``, loads
    ``MODEL.WEIGHTS`` with ``DePOTRCheckpointer`` (empty only with ``random_weights``:
    ``depotr.engine.checkpoint.weights_to_load``), and returns its
    :class:`CropKeypointPredictor` in eval mode."""
    return CropKeypointPredictor.from_model(build_cpu_model(cfg, random_weights)).eval()


def build_cpu_model(cfg: CfgNode, random_weights: bool = False) -> nn.Module:
    """``cfg``'s model built on the CPU in eval mode, ``MODEL.WEIGHTS`` loaded (as
    :func:`build_crop_keypoint_predictor`)."""
    load_weights = weights_to_load(cfg.MODEL.WEIGHTS, random_weights)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    if load_weights:
        DePOTRCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    log_device("cpu")
    return model.eval()


class ImageKeypointPredictor(nn.Module):
    """N persons, K keypoints, (H, W) the image size. One image and its person boxes ->
    keypoints in image pixels: the ``Predictor``'s pipeline from the caller's boxes on, as one
    traceable module (torch and ONNX ops only).

    Boxes are clipped to the image, grown to the crop's aspect and padded
    (``expand_boxes_to_aspect``, ``INPUT.CROP_PADDING``); the normalised image is cropped with
    ``torchvision.ops.roi_align(aligned=True)`` (ONNX RoiAlign, coordinate_transformation_mode
    "half_pixel", opset >= 16), as the meta-architecture crops (what lies outside the image reads
    the mean colour); then :class:`CropKeypointPredictor` and the crop -> image map
    (``crop_to_image``). Unlike the ``Predictor`` it does not sort, filter or drop boxes (a box
    must overlap the image), rescore persons or run OKS-NMS: keypoints n are those of box n.
    """

    def __init__(self, crop_predictor: CropKeypointPredictor, input_format: str, padding: float, sampling_ratio: int):
        """
        Args:
            crop_predictor: the pose branch on crops (its pixel statistics, flip test).
            input_format: ``INPUT.FORMAT``, "RGB" or "BGR": the channel order the branch is fed.
            padding: ``INPUT.CROP_PADDING``. sampling_ratio: ``INPUT.CROP_SAMPLING_RATIO``.
        """
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {input_format!r}")
        self.crop_predictor = crop_predictor
        self.to_rgb = input_format == "RGB"
        self.padding = float(padding)
        self.sampling_ratio = int(sampling_ratio)

    @classmethod
    def from_model(cls, model: nn.Module, input_format: str) -> "ImageKeypointPredictor":
        """The image predictor of a ``TopDownPoseEstimator`` (its branch shared, not copied)."""
        return cls(CropKeypointPredictor.from_model(model), input_format, model.crop_padding, model.crop_sampling_ratio)

    def forward(self, image: Tensor, boxes: Tensor) -> Tensor:
        """
        Args:
            image: (H, W, 3) uint8 BGR, as ``cv2.imread`` gives.
            boxes: (N, 4) float32 XYXY person boxes in image pixels, N >= 0.
        Returns:
            (N, K, 3): (x, y) in continuous image pixels (pixel i covers [i, i + 1)) and the score.
        """
        crop_size = self.crop_predictor.crop_size
        pixels = image.permute(2, 0, 1).float()
        if self.to_rgb:
            pixels = pixels.flip(0)
        normalised = ((pixels - self.crop_predictor.pixel_mean) / self.crop_predictor.pixel_std)[None]
        width_height = torch._shape_as_tensor(image)[:2].flip(0).to(boxes.dtype)
        clipped = torch.minimum(torch.clamp(boxes, min=0.0), width_height.repeat(2))
        params = box_crop_params(clipped, crop_size, self.padding)  # (N, 6): the model's crops
        centre, half_size = params[:, :2], params[:, 2:4] * 0.5
        rois = torch.cat([torch.zeros_like(centre[:, :1]), centre - half_size, centre + half_size], dim=1)
        crops = roi_align(normalised, rois, crop_size, 1.0, self.sampling_ratio, aligned=True)
        return crop_to_image(self.crop_predictor.predict_normalised(crops), params, crop_size)


def build_image_keypoint_predictor(cfg: CfgNode, random_weights: bool = False) -> ImageKeypointPredictor:
    """:class:`ImageKeypointPredictor` of ``cfg``'s model on the CPU, weights loaded as in
    :func:`build_crop_keypoint_predictor`, in eval mode."""
    return ImageKeypointPredictor.from_model(build_cpu_model(cfg, random_weights), cfg.INPUT.FORMAT).eval()


def random_crops(batch: int, crop_size: Sequence[int], seed: int) -> Tensor:
    """(batch, 3, H, W) float32 pixel values uniform in [0, 255], from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *crop_size, generator=generator) * 255


@contextlib.contextmanager
def reference_msda_backend() -> Iterator[None]:
    """Within the block, multi-scale deformable attention runs its PyTorch reference
    (``DEPOTR_MSDA_BACKEND=reference``, read on every call); the variable's previous value is
    restored after. Process-wide: other threads running DePOTR meanwhile are affected too."""
    previous = os.environ.get(BACKEND_ENV_VAR)
    os.environ[BACKEND_ENV_VAR] = "reference"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[BACKEND_ENV_VAR]
        else:
            os.environ[BACKEND_ENV_VAR] = previous


def _save_torchscript(module: nn.Module, example_inputs: Tuple[Tensor, ...], path: str) -> None:
    """Traces ``module`` on ``example_inputs`` and saves the ScriptModule to ``path``."""
    # check_trace=False: the export functions check the file on other inputs instead.
    traced = torch.jit.trace(module, example_inputs, check_trace=False)
    # A file object: given a path, torch.jit.save names the archive after it and rejects the
    # temporary name.
    with open(path, "wb") as f:
        torch.jit.save(traced, f)


def _save_onnx(
    module: nn.Module, example_inputs: Tuple[Tensor, ...], path: str, opset: int, axes: Dict[str, Dict[int, str]]
) -> None:
    """Exports ``module`` traced on ``example_inputs`` to ONNX ``opset`` (legacy TorchScript-based
    exporter, see the module docstring). ``axes``: input names, then output names (in order) ->
    their dynamic axes."""
    names = list(axes)
    torch.onnx.export(
        module,
        example_inputs,
        path,
        input_names=names[: len(example_inputs)],
        output_names=names[len(example_inputs) :],
        opset_version=opset,
        dynamo=False,
        dynamic_axes=axes,
    )


def run_torchscript(path: str, *inputs: Tensor) -> Tensor:
    """Runs the TorchScript file at ``path`` on its inputs (crops (N, 3, H, W), or an image
    (H, W, 3) uint8 and boxes (N, 4)); returns the keypoints (N, K, 3)."""
    module = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return module(*inputs)


def run_onnx(path: str, *inputs: Tensor) -> Tensor:
    """Runs the ONNX file at ``path`` with onnxruntime (CPU) on its inputs, as
    :func:`run_torchscript`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
    (keypoints,) = session.run([_ONNX_OUTPUT], feeds)
    return torch.from_numpy(keypoints)


_RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}


def keypoint_errors(actual: Tensor, expected: Tensor) -> Tuple[float, float]:
    """actual, expected: (N, K, 3) keypoints (x, y, score). Returns the max abs difference of
    (x, y) in pixels and of the score (0 for N = 0); infinite if the shapes differ or a value is
    not finite."""
    if actual.shape != expected.shape:
        return math.inf, math.inf
    if actual.numel() == 0:
        return 0.0, 0.0
    difference = (actual.double() - expected.double()).abs()
    if not torch.isfinite(difference).all():
        return math.inf, math.inf
    return difference[..., :2].max().item(), difference[..., 2].max().item()


@dataclass
class ExportReport:
    """One exported file and how far it is from the eager module."""

    format: str
    path: str
    # Max abs difference from the eager module over all checked crops: (x, y) in crop pixels,
    # and the score.
    coord_error_px: float
    score_error: float
    # Batch sizes N the file was run on (none of them the traced one).
    check_batches: Tuple[int, ...]


class ExportCheckError(RuntimeError):
    """An exported file disagrees with the eager module by more than the tolerance."""


def export_predictor(
    predictor: CropKeypointPredictor,
    fmt: str,
    path: str,
    batch: int = 2,
    tolerance: float = 1e-3,
    opset: int = MIN_OPSET,
    seed: int = 0,
) -> ExportReport:
    """Exports ``predictor`` to ``path`` in format ``fmt`` and checks the file.

    The module is traced on ``batch`` random crops with the reference deformable attention. The
    file written to a temporary name is loaded back and run on random crops of the batch sizes
    1 and ``batch + 1`` (the one equal to ``batch`` skipped); its keypoints are compared with
    ``predictor`` run eagerly with the default backend (the compiled op where it serves).

    Args:
        predictor: the module, in eval mode.
        fmt: one of ``EXPORT_FORMATS``.
        path: the file to write; it is replaced only if the check passes.
        batch: N of the example crops the module is traced on.
        tolerance: largest allowed max abs difference of (x, y), in crop pixels, and of the
            score.
        opset: ONNX opset (>= ``MIN_OPSET``); unused for TorchScript.
        seed: seed of the random crops.

    Returns:
        the :class:`ExportReport` of the file.

    Raises:
        ImportError: ``fmt`` is "onnx" and onnxruntime is not installed (nothing is exported).
        ExportCheckError: the file disagrees by more than ``tolerance``; ``path`` is left as it
            was.
    """
    _check_export_arguments(predictor, fmt, opset)
    if batch < 1:
        raise ValueError(f"the example batch needs at least one crop, got {batch}")
    check_batches = tuple(n for n in (0, 1, batch + 1) if n != batch)
    cases = []
    for offset, n in enumerate(check_batches, start=1):
        crops = random_crops(n, predictor.crop_size, seed + offset)
        with torch.no_grad():
            cases.append(((crops,), predictor(crops)))
    example = (random_crops(batch, predictor.crop_size, seed),)
    axes = {_ONNX_INPUT: {0: "N"}, _ONNX_OUTPUT: {0: "N"}}
    what = f"PyTorch on batches of {check_batches} crops"
    errors = _write_checked(predictor, fmt, path, example, axes, cases, tolerance, opset, what)
    return ExportReport(fmt, path, errors[0], errors[1], check_batches)


def _check_export_arguments(module: nn.Module, fmt: str, opset: int) -> None:
    """ValueError / ImportError for an export that cannot be made or checked."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    if module.training:
        raise ValueError("export the predictor in eval mode (dropout, batch-norm statistics)")
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX opset must be >= {MIN_OPSET}, got {opset}")
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise ImportError("checking the ONNX export needs onnxruntime (tools/install.sh installs it)")


def _write_checked(
    module: nn.Module,
    fmt: str,
    path: str,
    example_inputs: Tuple[Tensor, ...],
    axes: Dict[str, Dict[int, str]],
    cases: List[Tuple[Tuple[Tensor, ...], Tensor]],
    tolerance: float,
    opset: int,
    what: str,
) -> Tuple[float, float]:
    """Traces ``module`` on ``example_inputs`` (reference deformable attention) into a temporary
    file, runs the file on each case's inputs and compares with its expected (N, K, 3)
    keypoints; moves the file to ``path`` only when both max abs errors (x, y and score) are
    within ``tolerance`` and returns them, else raises ExportCheckError (``what``: the
    reference, for the message)."""
    with atomic_output_path(path) as tmp_path:
        # TracerWarnings flag Python-side shape checks and level sizes that become constants:
        # intended (the crop size is fixed); the checks run other batch (and image) sizes.
        with torch.no_grad(), reference_msda_backend(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            if fmt == "torchscript":
                _save_torchscript(module, example_inputs, tmp_path)
            else:
                _save_onnx(module, example_inputs, tmp_path, opset, axes)
        coord_error, score_error = 0.0, 0.0
        for inputs, expected in cases:
            errors = keypoint_errors(_RUNNERS[fmt](tmp_path, *inputs), expected)
            coord_error, score_error = max(coord_error, errors[0]), max(score_error, errors[1])
        if coord_error > tolerance or score_error > tolerance:
            raise ExportCheckError(
                f"{fmt} export disagrees with {what}: max abs error {coord_error:.3g} px (x, y), "
                f"{score_error:.3g} (score) > tolerance {tolerance:g}; {path} left as it was"
            )
    return coord_error, score_error


def reference_predictor(cfg: CfgNode, random_weights: bool = False) -> Predictor:
    """The ``Predictor`` the image-in export is checked against and made from: ``cfg`` on the
    CPU, keeping every caller box in its order (``TEST.OKS_NMS_THRESH`` 1, no box score
    threshold or top-k); weights as :func:`build_crop_keypoint_predictor`."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.OKS_NMS_THRESH = 1.0
    cfg.MODEL.DEPOTR.BOX_SCORE_THRESH = 0.0
    cfg.MODEL.DEPOTR.BOX_TOPK = 0
    return Predictor(cfg, random_weights)


def predictor_keypoints(predictor: Predictor, image: np.ndarray, boxes: Tensor) -> Tensor:
    """(N, K, 3) keypoints that ``predictor`` gives for the (H, W, 3) uint8 BGR ``image`` and
    its (N, 4) XYXY ``boxes``, row n for box n (NaN where it dropped the box)."""
    instances = predictor(image, boxes=boxes)
    keypoints = torch.full((len(boxes),) + tuple(instances.pred_keypoints.shape[1:]), math.nan)
    keypoints[instances.box_index] = instances.pred_keypoints
    return keypoints


def example_image(height: int, width: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8 BGR: random colours bilinearly upsampled from 1/8 the size."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, height // 8), max(1, width // 8), generator=generator) * 255
    fine = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return fine[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def export_image_predictor(
    predictor: Predictor,
    fmt: str,
    path: str,
    tolerance: float = 1e-3,
    opset: int = MIN_OPSET,
    seed: int = 0,
) -> ExportReport:
    """Exports the :class:`ImageKeypointPredictor` of ``predictor``'s model (image and boxes in,
    keypoints in image pixels out) to ``path`` and checks the file against ``predictor``.

    Traced on a 96x72 image with 2 boxes; checked on a 130x100 image with 3 boxes (one
    reaching past the border) and an 80x120 image with none, against
    :func:`predictor_keypoints` (make ``predictor`` with :func:`reference_predictor`). ONNX:
    inputs "image" (H, W, 3) uint8 BGR and "boxes" (N, 4) float32 XYXY, output "keypoints"
    (N, K, 3), H, W and N dynamic. Arguments, returns and raises as :func:`export_predictor`,
    with the errors in image pixels.
    """
    module = ImageKeypointPredictor.from_model(predictor.model, predictor.input_format).eval()
    _check_export_arguments(module, fmt, opset)
    trace_boxes = torch.tensor([[10.0, 8.0, 50.0, 90.0], [30.0, 20.0, 70.0, 60.0]])
    checks = {
        (130, 100): torch.tensor([[12.0, 15.0, 60.0, 120.0], [55.0, 40.0, 112.0, 140.0], [5.0, 5.0, 25.0, 30.0]]),
        (80, 120): torch.zeros(0, 4),
    }
    cases = []
    for offset, ((height, width), boxes) in enumerate(checks.items(), start=1):
        image = example_image(height, width, seed + offset)
        with torch.no_grad():
            cases.append(((torch.from_numpy(image), boxes), predictor_keypoints(predictor, image, boxes)))
    example = (torch.from_numpy(example_image(96, 72, seed)), trace_boxes)
    what = f"the Predictor on {len(checks)} images of {tuple(len(b) for b in checks.values())} boxes"
    errors = _write_checked(module, fmt, path, example, _IMAGE_AXES, cases, tolerance, opset, what)
    return ExportReport(fmt, path, errors[0], errors[1], tuple(len(b) for b in checks.values()))
