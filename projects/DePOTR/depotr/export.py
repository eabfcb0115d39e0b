"""Export of the pose branch, person crops in -> keypoints out, to TorchScript and ONNX.

Shape letters: N persons (crops), K keypoints, (H, W) the crop size (``INPUT.CROP_SIZE``).

:class:`CropKeypointPredictor` is the exported module: pixel normalisation, the keypoint branch,
its flip test when ``TEST.FLIP`` is on, and the branch's ``decode`` — everything
``TopDownPoseEstimator.inference`` computes between cropping and ``crop_to_image``. The box ->
crop step (RoIAlign) and the crop -> image transform stay with the caller.

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
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import CfgNode
from detectron2.modeling import build_model

from .engine.checkpoint import DePOTRCheckpointer
from .file_io import atomic_output_path
from .layers import BACKEND_ENV_VAR
from .modeling.tta import predict_crop_keypoints

__all__ = [
    "EXPORT_FORMATS",
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
                order, N >= 1: the person boxes of the meta-architecture's input images,
                resampled to (H, W) (``depotr.modeling.crops.crop_images``). Where a crop reaches
                outside its image, fill it with ``PIXEL_MEAN`` (what the model's crops read there).
        Returns:
            (N, K, 3): (x, y) in continuous crop pixels (pixel i covers [i, i + 1)) and the
            branch's score (heatmap maximum, or sigmoid of the regression confidence).
        """
        normalised = (crops - self.pixel_mean) / self.pixel_std
        return predict_crop_keypoints(self.branch, normalised, self.flip_indices)


def build_crop_keypoint_predictor(cfg: CfgNode) -> CropKeypointPredictor:
    """Builds ``cfg``'s model on the CPU with Detectron2's ``build_model`` (random weights),
    loads ``MODEL.WEIGHTS`` with ``DePOTRCheckpointer`` when set, and returns its
    :class:`CropKeypointPredictor` in eval mode."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DePOTRCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return CropKeypointPredictor.from_model(model).eval()


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


def _save_torchscript(predictor: CropKeypointPredictor, example_crops: Tensor, path: str) -> None:
    """Traces ``predictor`` on ``example_crops`` and saves the ScriptModule to ``path``."""
    # check_trace=False: export_predictor checks the file on other batch sizes instead.
    traced = torch.jit.trace(predictor, example_crops, check_trace=False)
    # A file object: given a path, torch.jit.save names the archive after it and rejects the
    # temporary name.
    with open(path, "wb") as f:
        torch.jit.save(traced, f)


def _save_onnx(predictor: CropKeypointPredictor, example_crops: Tensor, path: str, opset: int) -> None:
    """Exports ``predictor`` traced on ``example_crops`` to ONNX ``opset`` with a dynamic
    batch axis "N" (legacy TorchScript-based exporter, see the module docstring)."""
    torch.onnx.export(
        predictor,
        (example_crops,),
        path,
        input_names=[_ONNX_INPUT],
        output_names=[_ONNX_OUTPUT],
        opset_version=opset,
        dynamo=False,
        dynamic_axes={_ONNX_INPUT: {0: "N"}, _ONNX_OUTPUT: {0: "N"}},
    )


def run_torchscript(path: str, crops: Tensor) -> Tensor:
    """Runs the TorchScript file at ``path`` on crops (N, 3, H, W); returns (N, K, 3)."""
    module = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return module(crops)


def run_onnx(path: str, crops: Tensor) -> Tensor:
    """Runs the ONNX file at ``path`` with onnxruntime (CPU) on crops (N, 3, H, W); returns
    (N, K, 3)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (keypoints,) = session.run([_ONNX_OUTPUT], {_ONNX_INPUT: crops.numpy()})
    return torch.from_numpy(keypoints)


_RUNNERS = {"torchscript": run_torchscript, "onnx": run_onnx}


def keypoint_errors(actual: Tensor, expected: Tensor) -> Tuple[float, float]:
    """actual, expected: (N, K, 3) keypoints (x, y, score). Returns the max abs difference of
    (x, y) in crop pixels and of the score; infinite if the shapes differ or a value is not
    finite."""
    if actual.shape != expected.shape:
        return math.inf, math.inf
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
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    if predictor.training:
        raise ValueError("export the predictor in eval mode (dropout, batch-norm statistics)")
    if batch < 1:
        raise ValueError(f"the example batch needs at least one crop, got {batch}")
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX opset must be >= {MIN_OPSET}, got {opset}")
    if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise ImportError("checking the ONNX export needs onnxruntime (tools/install.sh installs it)")
    check_batches = tuple(n for n in (1, batch + 1) if n != batch)
    with atomic_output_path(path) as tmp_path:
        # TracerWarnings flag Python-side shape checks and level sizes that become constants:
        # intended (the crop size is fixed); the check below runs other batch sizes.
        with torch.no_grad(), reference_msda_backend(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            example_crops = random_crops(batch, predictor.crop_size, seed)
            if fmt == "torchscript":
                _save_torchscript(predictor, example_crops, tmp_path)
            else:
                _save_onnx(predictor, example_crops, tmp_path, opset)
        coord_error, score_error = 0.0, 0.0
        for offset, n in enumerate(check_batches, start=1):
            crops = random_crops(n, predictor.crop_size, seed + offset)
            with torch.no_grad():
                expected = predictor(crops)
            errors = keypoint_errors(_RUNNERS[fmt](tmp_path, crops), expected)
            coord_error, score_error = max(coord_error, errors[0]), max(score_error, errors[1])
        if coord_error > tolerance or score_error > tolerance:
            raise ExportCheckError(
                f"{fmt} export disagrees with PyTorch on batches of {check_batches} crops: max abs error "
                f"{coord_error:.3g} px (x, y), {score_error:.3g} (score) > tolerance {tolerance:g}; "
                f"{path} left as it was"
            )
    return ExportReport(fmt, path, coord_error, score_error, check_batches)
