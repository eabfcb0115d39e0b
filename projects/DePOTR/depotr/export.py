"""Export of DePOTR to TorchScript and ONNX (usage, formats and measured errors: docs/export.md).

Shape letters: N persons (crops), K keypoints, (H, W) the crop size (``INPUT.CROP_SIZE``).

:class:`CropKeypointPredictor`: person crops in -> keypoints in crop pixels out (what
``TopDownPoseEstimator.inference`` does between cropping and ``crop_to_image``: normalisation, the
branch, its flip test, ``decode``). :class:`ImageKeypointPredictor`: an image and its person boxes
in -> keypoints in image pixels out, checked against ``depotr.Predictor``. Both take N = 0.

TorchScript is ``torch.jit.trace`` (crop size fixed, N free), ONNX (opset >= 17)
``torch.onnx.export(dynamo=False)``: torch.export fails on the transformer's host-side
``spatial_shapes.tolist()``. Both trace the ``F.grid_sample`` reference of deformable attention
(:func:`reference_msda_backend`), so the files need neither ``depotr._C`` nor a custom ONNX op.
The image-in TorchScript file calls torchvision's ``roi_align`` op: it loads after ``import torchvision``.
"""

import contextlib
import copy
import functools
import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from detectron2.config import CfgNode

from .config import log_device
from .engine.checkpoint import DePOTRCheckpointer, weights_to_load
from .file_io import atomic_output_path
from .layers import BACKEND_ENV_VAR
from .modeling.crops import MAX_SAMPLING_RATIO, box_crop_params, crop_to_image
from .modeling.meta_arch import build_pose_model, check_pose_config
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
    "over_cap_box",
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
OUTPUT_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}  # format -> file name (crops in)
IMAGE_OUTPUT_FILES = {"torchscript": "image_model.ts", "onnx": "image_model.onnx"}  # (image in)
EXPORT_INPUTS = ("crops", "image")  # what an export takes: person crops, or an image and its boxes
MIN_OPSET = 17  # ONNX: 16 is the first with GridSample, 17 the first with LayerNormalization
_ONNX_INPUT, _ONNX_OUTPUT = "crops", "keypoints"
# Each check case runs this many times on one loaded file (a TorchScript file traced with
# parameters that require grad ran once, then failed).
_CHECK_CALLS = 2
_IMAGE_AXES = {"image": {0: "H", 1: "W"}, "boxes": {0: "N"}, _ONNX_OUTPUT: {0: "N"}}  # ONNX names -> dynamic axes


class CropKeypointPredictor(nn.Module):
    """N crops, K keypoints, (H, W) crop size. Raw person crops -> keypoints in crop pixels.

    Args:
        branch: a keypoint branch (``forward``, ``decode``, ``flip_back``, ``crop_size``).
        pixel_mean, pixel_std: (C,) per-channel normalisation of 0..255 pixels.
        flip_indices: (K,) mirror partner of each keypoint: run the flip test; None: don't.
    """

    def __init__(
        self,
        branch: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        flip_indices: Optional[Sequence[int]] = None,
    ):
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
        flip_indices = model.flip_indices if model.test_flip else None
        return cls(
            model.keypoint_branch, model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist(), flip_indices
        )

    def forward(self, crops: Tensor) -> Tensor:
        """
        Args:
            crops: (N, 3, H, W) float32 pixel values in 0..255, channels in ``INPUT.FORMAT``
                order, N >= 0: person boxes resampled to (H, W) as
                ``depotr.modeling.crops.crop_images`` does, ``PIXEL_MEAN`` outside the image.
        Returns:
            (N, K, 3): (x, y) in continuous crop pixels (pixel i covers [i, i + 1)) and the
            branch's score (heatmap maximum, or sigmoid of the regression confidence).
        Raises:
            ValueError: crops not (N, 3, H, W), stating both shapes (also from a TorchScript file).
        """
        height, width = self.crop_size
        crops = _checked_shape(crops, [-1, 3, height, width], f"crops must be (N, 3, {height}, {width}) (N, C, H, W)")
        return self.predict_normalised((crops - self.pixel_mean) / self.pixel_std)

    def predict_normalised(self, crops: Tensor) -> Tensor:
        """:meth:`forward` of normalised crops (N, 3, H, W), N >= 0. For N = 0 the branch runs on
        one zero crop whose result is dropped: an exported Reshape cannot take an empty batch
        (ONNX reads a 0 in its target shape as "keep this dimension")."""
        num = torch._shape_as_tensor(crops)[0]
        padded = torch.cat([crops, crops.new_zeros((1,) + tuple(crops.shape[1:]))])
        padded = padded.index_select(0, torch.arange(torch.clamp(num, min=1)))
        keypoints = predict_crop_keypoints(self.branch, padded, self.flip_indices)
        return keypoints.index_select(0, torch.arange(num))


def _checked_shape(tensor: Tensor, shape: List[int], expected: str) -> Tensor:
    """``tensor`` when its shape is ``shape`` (-1: any size), else a ValueError "``expected``, got
    [its shape]": in an exported file too, where a wrong shape failed deep inside the network. A
    traced Python comparison would be a constant, so the trace calls :func:`_scripted_shape_check`;
    the ONNX export leaves the check to onnxruntime, which checks the declared input shapes."""
    if torch.onnx.is_in_onnx_export():
        return tensor
    return (_scripted_shape_check() if torch.jit.is_tracing() else _shape_check)(tensor, shape, expected)


def _shape_check(tensor: Tensor, shape: List[int], expected: str) -> Tensor:
    """:func:`_checked_shape` itself (TorchScript)."""
    given = list(tensor.shape)
    wrong = len(given) != len(shape)
    for size, want in zip(given, shape):
        wrong = wrong or (want >= 0 and size != want)
    if wrong:
        raise ValueError("{}, got {}".format(expected, given))
    return tensor


@functools.lru_cache(maxsize=None)
def _scripted_shape_check() -> Callable[[Tensor, List[int], str], Tensor]:
    """:func:`_shape_check` scripted (on first use, not at import)."""
    return torch.jit.script(_shape_check)


def build_crop_keypoint_predictor(cfg: CfgNode, random_weights: bool = False) -> CropKeypointPredictor:
    """:class:`CropKeypointPredictor` of :func:`build_cpu_model`, in eval mode."""
    return CropKeypointPredictor.from_model(build_cpu_model(cfg, random_weights)).eval()


def build_cpu_model(cfg: CfgNode, random_weights: bool = False) -> nn.Module:
    """``cfg``'s model built on the CPU in eval mode, ``MODEL.WEIGHTS`` loaded with
    ``DePOTRCheckpointer`` (empty only with ``random_weights``: ``weights_to_load``), without the
    training crop augmentation; a ConfigError for a config of another model (``check_pose_config``)."""
    check_pose_config(cfg)
    load_weights = weights_to_load(cfg.MODEL.WEIGHTS, random_weights)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_pose_model(cfg, training=False)
    if load_weights:
        DePOTRCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    log_device("cpu")
    return model.eval()


class ImageKeypointPredictor(nn.Module):
    """N persons, K keypoints, (H, W) the image size. The ``Predictor``'s pipeline from the
    caller's boxes on as one traceable module: boxes clipped to the image -> the model's crops
    (``box_crop_params``), cut from the normalised image by ``roi_align(aligned=True)`` (ONNX
    RoiAlign "half_pixel"; the mean colour outside the image; ``crop_images``' sampling ratio) ->
    :class:`CropKeypointPredictor` -> ``crop_to_image``. Unlike the ``Predictor`` it does not sort,
    filter or drop boxes (a box must overlap the image), rescore persons or run OKS-NMS:
    keypoints n are those of box n.

    Args:
        crop_predictor: the pose branch on crops (its pixel statistics, flip test).
        input_format: ``INPUT.FORMAT``, "RGB" or "BGR": the channel order the branch is fed.
        padding: ``INPUT.CROP_PADDING``. sampling_ratio: ``INPUT.CROP_SAMPLING_RATIO``.
    """

    def __init__(self, crop_predictor: CropKeypointPredictor, input_format: str, padding: float, sampling_ratio: int):
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
        Raises:
            ValueError: an image not (H, W, 3) or boxes not (N, 4), stating both shapes.
        """
        image = _checked_shape(image, [-1, -1, 3], "image must be (H, W, 3) uint8 BGR")
        boxes = _checked_shape(boxes, [-1, 4], "boxes must be (N, 4) XYXY")
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
        crops = self._crop(normalised, rois, params)
        return crop_to_image(self.crop_predictor.predict_normalised(crops), params, crop_size)

    def _crop(self, normalised: Tensor, rois: Tensor, params: Tensor) -> Tensor:
        """(N, 3, H, W) crops of the (1, 3, Hi, Wi) ``normalised`` image at the (N, 5) ``rois``
        (batch index, XYXY) of the (N, 6) crop ``params``, sampled as ``crop_images`` does: a fixed
        ``sampling_ratio``, or the adaptive ceil(bin size) capped at ``MAX_SAMPLING_RATIO``."""
        crop_size = self.crop_predictor.crop_size
        if self.sampling_ratio > 0:
            return roi_align(normalised, rois, crop_size, 1.0, self.sampling_ratio, aligned=True)
        # roi_align takes one ratio and has no cap: boxes over the cap are cut by a second call at
        # the cap (usually of 0 boxes) and replaced by a crop-sized box (ratio 1) in the first.
        bins = params[:, [3, 2]].double() / torch.tensor(crop_size, dtype=torch.float64)  # as crop_images
        over_cap = (bins > MAX_SAMPLING_RATIO).any(dim=1)
        small_box = torch.tensor([0.0, 0.0, 0.0, float(crop_size[1]), float(crop_size[0])], dtype=rois.dtype)
        adaptive = roi_align(normalised, torch.where(over_cap[:, None], small_box, rois), crop_size, 1.0, 0, True)
        over_index = torch.nonzero(over_cap)[:, 0]
        capped = roi_align(normalised, rois.index_select(0, over_index), crop_size, 1.0, MAX_SAMPLING_RATIO, True)
        # Box n's crop in cat([adaptive, capped]): n, or N + its rank among the boxes over the cap.
        num = torch._shape_as_tensor(rois)[0]
        rank = torch.cumsum(over_cap.long(), dim=0) - 1
        index = torch.where(over_cap, num + rank, torch.arange(num))
        return torch.cat([adaptive, capped]).index_select(0, index)


def build_image_keypoint_predictor(cfg: CfgNode, random_weights: bool = False) -> ImageKeypointPredictor:
    """:class:`ImageKeypointPredictor` of :func:`build_cpu_model`, in eval mode."""
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


def run_torchscript(path: str, *inputs: Tensor) -> Tensor:
    """Runs the TorchScript file at ``path`` on its inputs (crops (N, 3, H, W), or an image
    (H, W, 3) uint8 and boxes (N, 4)); returns the keypoints (N, K, 3)."""
    module = torch.jit.load(path, map_location="cpu")
    with torch.no_grad():
        return module(*inputs)


def run_onnx(path: str, *inputs: Tensor) -> Tensor:
    """:func:`run_torchscript` of an ONNX file, with onnxruntime (CPU)."""
    return _loaded_file("onnx", path)(*inputs)


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
    """One exported file, its max abs differences from the eager module over all checked inputs
    ((x, y) in pixels, and the score), and the batch sizes N it was checked on (not the traced one)."""

    format: str
    path: str
    coord_error_px: float
    score_error: float
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
    """Exports ``predictor`` (eval mode) to ``path`` in format ``fmt`` (of ``EXPORT_FORMATS``)
    and checks the file.

    The module is traced on ``batch`` random crops (from ``seed``); the file, written to a
    temporary name, is run on random crops of the batch sizes 0, 1 and ``batch + 1`` (the one
    equal to ``batch`` skipped) and compared with ``predictor`` run eagerly with the default
    deformable-attention backend. ``tolerance``: the largest allowed max abs difference of (x, y)
    in crop pixels and of the score. ``opset``: ONNX opset (>= ``MIN_OPSET``).

    Raises:
        ImportError: ``fmt`` is "onnx" and onnxruntime is not installed (nothing is exported).
        ExportCheckError: the file disagrees by more than ``tolerance``; ``path`` is left as it was.
    """
    _check_export_arguments(predictor, fmt, opset)
    if batch < 1:
        raise ValueError(f"the example batch needs at least one crop, got {batch}")
    check_batches = tuple(n for n in (0, 1, batch + 1) if n != batch)
    crops = [random_crops(n, predictor.crop_size, seed + offset) for offset, n in enumerate(check_batches, start=1)]
    with torch.no_grad():
        cases = [((c,), predictor(c), 1.0) for c in crops]
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
    cases: List[Tuple[Tuple[Tensor, ...], Tensor, float]],
    tolerance: float,
    opset: int,
    what: str,
) -> Tuple[float, float]:
    """Traces a frozen copy of ``module`` (:func:`_frozen_copy`) on ``example_inputs`` (reference
    deformable attention) into a temporary file, loads it once and runs it ``_CHECK_CALLS`` times
    on each case's inputs (TorchScript with grad mode on), comparing with the case's (N, K, 3)
    keypoints; a case's (x, y) errors are divided by its scale. Moves the file to ``path`` and
    returns the max abs errors ((x, y), score) when both are within ``tolerance``, else raises
    ExportCheckError (``what``: the reference, for the message), also when the file fails to run.
    ``axes``: ONNX input names, then output names -> their dynamic axes."""
    module = _frozen_copy(module)
    with atomic_output_path(path) as tmp_path:
        # TracerWarnings flag Python-side shape checks and level sizes that become constants:
        # intended (the crop size is fixed); the checks run other batch (and image) sizes.
        with torch.no_grad(), reference_msda_backend(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            if fmt == "torchscript":
                # A file object: given a path, torch.jit.save names the archive after it and
                # rejects the temporary name.
                with open(tmp_path, "wb") as f:
                    torch.jit.save(torch.jit.trace(module, example_inputs, check_trace=False), f)
            else:
                names = list(axes)
                torch.onnx.export(
                    module,
                    example_inputs,
                    tmp_path,
                    input_names=names[: len(example_inputs)],
                    output_names=names[len(example_inputs) :],
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes=axes,
                )
        coord_error, score_error = 0.0, 0.0
        run = _loaded_file(fmt, tmp_path)
        for inputs, expected, scale in cases * _CHECK_CALLS:
            try:
                actual = run(*inputs)
            except RuntimeError as e:
                raise ExportCheckError(f"{fmt} export fails when run: {e}; {path} left as it was") from e
            errors = keypoint_errors(actual, expected)
            coord_error, score_error = max(coord_error, errors[0] / scale), max(score_error, errors[1])
        if coord_error > tolerance or score_error > tolerance:
            raise ExportCheckError(
                f"{fmt} export disagrees with {what}: max abs error {coord_error:.3g} px (x, y), "
                f"{score_error:.3g} (score) > tolerance {tolerance:g}; {path} left as it was"
            )
    return coord_error, score_error


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (left as it is) whose parameters do not require grad, to trace: a
    TorchScript file traced with parameters that require grad fails from its second call outside
    ``torch.no_grad()`` ("a view of a leaf Variable that requires grad is being used in an in-place operation")."""
    return copy.deepcopy(module).requires_grad_(False)


def _loaded_file(fmt: str, path: str) -> Callable[..., Tensor]:
    """The exported file at ``path`` loaded once (ONNX: one onnxruntime CPU session), as a function
    of its inputs -> (N, K, 3) keypoints; TorchScript runs with grad mode on, as a user's
    ``torch.jit.load(path)(x)``."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(*inputs: Tensor) -> Tensor:
            feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
            return torch.from_numpy(session.run([_ONNX_OUTPUT], feeds)[0])

        return run
    module = torch.jit.load(path, map_location="cpu")

    def run(*inputs: Tensor) -> Tensor:
        with torch.enable_grad():
            return module(*inputs).detach()

    return run


def reference_predictor(cfg: CfgNode, random_weights: bool = False) -> Predictor:
    """The ``Predictor`` the image-in export is checked against and made from: ``cfg`` on the
    CPU in float32 as the exported graph (``TEST.PRECISION``), keeping every caller box in its
    order (``TEST.OKS_NMS_THRESH`` 1, no box score threshold or top-k) and without the person
    detector of ``MODEL.DEPOTR.DETECTOR`` (it takes the caller's boxes only); weights as
    :func:`build_cpu_model`."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = ""
    cfg.TEST.PRECISION = "float32"
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


def over_cap_box(crop_size: Sequence[int], padding: float) -> Tensor:
    """(1, 4) XYXY box (0, 0, w, h) whose crop box is 1.5 ``MAX_SAMPLING_RATIO`` times the crop
    size (H, W) = ``crop_size`` (``INPUT.CROP_PADDING`` ``padding``), 1/3 as wide as that aspect
    (the crop reads the mean colour on both sides): the whole of an (h, w) image whose crop is cut
    with the capped sampling ratio, 24 samples per bin side without the cap."""
    height = math.ceil(1.5 * MAX_SAMPLING_RATIO * crop_size[0] / padding)
    width = math.ceil(height * crop_size[1] / crop_size[0] / 3)
    return torch.tensor([[0.0, 0.0, float(width), float(height)]])


def export_image_predictor(
    predictor: Predictor, fmt: str, path: str, tolerance: float = 1e-3, opset: int = MIN_OPSET, seed: int = 0
) -> ExportReport:
    """Exports the :class:`ImageKeypointPredictor` of ``predictor``'s model to ``path`` and
    checks the file against :func:`predictor_keypoints` (make ``predictor`` with
    :func:`reference_predictor`).

    Traced on a 96x72 image with 2 boxes; checked on a 130x100 image with 3 boxes (one past the
    border), an 80x120 image with none and a tall image whose one box is cropped with the capped
    sampling ratio (:func:`over_cap_box`). ONNX: inputs "image" (H, W, 3) uint8 BGR and "boxes"
    (N, 4) float32 XYXY, output "keypoints" (N, K, 3); H, W and N dynamic. Arguments, returns and
    raises as :func:`export_predictor`, with the errors in image pixels (for the tall box, in its
    crop's pixels: a crop-pixel rounding error, e.g. DARK's, grows with the box in image pixels).
    """
    module = ImageKeypointPredictor.from_model(predictor.model, predictor.input_format).eval()
    _check_export_arguments(module, fmt, opset)
    trace_boxes = torch.tensor([[10.0, 8.0, 50.0, 90.0], [30.0, 20.0, 70.0, 60.0]])
    crop_size, padding = module.crop_predictor.crop_size, module.padding
    big_box = over_cap_box(crop_size, padding)
    big_scale = box_crop_params(big_box, crop_size, padding)[0, 3].item() / crop_size[0]  # image px per crop px
    checks = {  # (H, W) -> boxes, scale of the (x, y) errors
        (130, 100): (torch.tensor([[12.0, 15, 60, 120], [55, 40, 112, 140], [5, 5, 25, 30]]), 1.0),
        (80, 120): (torch.zeros(0, 4), 1.0),
        (int(big_box[0, 3]), int(big_box[0, 2])): (big_box, big_scale),
    }
    cases = []
    for offset, ((height, width), (boxes, scale)) in enumerate(checks.items(), start=1):
        image = example_image(height, width, seed + offset)
        with torch.no_grad():
            cases.append(((torch.from_numpy(image), boxes), predictor_keypoints(predictor, image, boxes), scale))
    check_batches = tuple(len(boxes) for boxes, _ in checks.values())
    example = (torch.from_numpy(example_image(96, 72, seed)), trace_boxes)
    what = f"the Predictor on {len(checks)} images of {check_batches} boxes"
    errors = _write_checked(module, fmt, path, example, _IMAGE_AXES, cases, tolerance, opset, what)
    return ExportReport(fmt, path, errors[0], errors[1], check_batches)
