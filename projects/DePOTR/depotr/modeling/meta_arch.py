"""Top-down pose estimation meta-architecture: person boxes -> RoIAlign crops -> keypoint branch.

Shape letters: B images, N persons (of one image, or of the batch where said), K keypoints,
C = 3 channels, (H, W) the crop size (``INPUT.CROP_SIZE``).

The top-down recipe is SimpleBaseline's (Xiao et al., ECCV 2018): boxes grown to the crop aspect
and padded by 1.25, instance score = box score x mean confident keypoint score, flip test. The
keypoint branch is DePOTR's (Straka, the seed thesis) or a baseline head
(``depotr.modeling.build_keypoint_branch``).
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..cli import ConfigError
from ..data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS, keypoint_metadata_from_config
from ..layers import autocast_to
from .box_sources import TRAIN_BOX_SOURCES, GtBoxes, PersonBoxSource, PrecomputedBoxes, build_box_source
from .crop_augmentation import CropAugmentation
from .crops import box_crop_params, crop_images, crop_to_image, image_to_crop
from .keypoint_branches import KeypointBranch, build_keypoint_branch
from .oks_nms import oks_nms
from .tta import predict_crop_keypoints

__all__ = ["TopDownPoseEstimator", "build_pose_model", "check_pose_config", "rescore_instances"]

# TEST.PRECISION values -> the keypoint branch's inference dtype.
TEST_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def rescore_instances(box_scores: Tensor, keypoint_scores: Tensor, thresh: float) -> Tensor:
    """SimpleBaseline's instance rescoring: (N,) box scores x the mean of the (N, K) keypoint
    scores above ``thresh``. A person without such a keypoint takes the mean of all its keypoint
    scores (SimpleBaseline: 0), so that it keeps its order and, for equal box scores, still ranks
    below every person with a confident keypoint. Returns (N,) instance scores."""
    above = keypoint_scores > thresh
    count = above.sum(dim=1)
    mean_above = (keypoint_scores * above).sum(dim=1) / count.clamp(min=1)
    return box_scores * torch.where(count > 0, mean_above, keypoint_scores.mean(dim=1))


def _on_cpu(cfg) -> bool:
    return torch.device(cfg.MODEL.DEVICE).type == "cpu"


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 convolutions and matmuls natively (avx512_bf16 or AMX);
    without, oneDNN emulates them ~20x slower than float32 (benchmarks/README.md). torch.cpu's
    checks are private: a torch without them counts as native (no warning rather than a wrong one)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is None or check() for check in checks)


@META_ARCH_REGISTRY.register()
class TopDownPoseEstimator(nn.Module):
    """Crops every person box of a batch with one call of ``crops.crop_images`` (uint8 images are
    never converted whole) and runs a keypoint branch. Training: the clipped ``gt`` boxes, crop
    parameters from ``crop_augmentation``. Inference: boxes from ``box_source`` (a detector runs
    outside the model, ``PoseWithDetector``), cropped unrotated."""

    @configurable
    def __init__(
        self,
        *,
        keypoint_branch: KeypointBranch,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        flip_indices: Sequence[int],
        input_format: str = "RGB",
        crop_size: Optional[Sequence[int]] = None,
        crop_padding: float = 1.25,
        crop_sampling_ratio: int = 0,
        crop_augmentation: Optional[CropAugmentation] = None,
        box_source: Optional[PersonBoxSource] = None,
        test_flip: bool = False,
        test_precision: str = "float32",
        train_precision: str = "float32",
        test_channels_last: bool = False,
        keypoint_score_thresh: float = 0.2,
        oks_nms_thresh: float = 1.0,
        oks_sigmas: Sequence[float] = COCO_PERSON_OKS_SIGMAS,
        min_keypoints_per_person: int = 1,
    ):
        """
        Args:
            pixel_mean, pixel_std: per-channel normalisation, in the order of ``input_format``
                (the channel order of ``batched_input["image"]``, "RGB" or "BGR").
            flip_indices: (K,) index of each keypoint's left/right mirror partner.
            crop_size: (H, W); default (and must equal) ``keypoint_branch.crop_size``.
            crop_padding: factor >= 1 applied to a box after growing it to the aspect W:H.
            crop_sampling_ratio: RoIAlign samples per bin side (0 = adaptive, see ``crop_images``).
            crop_augmentation: the training crop augmentation (``INPUT.CROP_AUG``); None: off.
            box_source: the inference boxes; default ``PrecomputedBoxes()`` (at most 100 per image).
            test_flip: average with the mirrored crops' predictions (``tta.flip_test``).
            test_precision: a key of ``TEST_PRECISIONS``, the branch's inference precision
                (``tta.predict_crop_keypoints``).
            train_precision: "float32", or "bfloat16" to run the branch's forward under bfloat16
                autocast while training (its heads and the losses stay float32): what
                ``SOLVER.AMP.ENABLED`` does on a CPU, where Detectron2's AMPTrainer needs CUDA.
            test_channels_last: inference crops in channels-last memory format.
            keypoint_score_thresh: threshold of :func:`rescore_instances`.
            oks_nms_thresh: per image, a person whose pose has OKS (``oks_sigmas``, box areas as
                scales) above this with a higher-scoring one is dropped; 1 disables.
            min_keypoints_per_person: training skips gt persons with fewer labelled keypoints.
        """
        super().__init__()
        self.keypoint_branch = keypoint_branch
        branch_size = tuple(int(s) for s in keypoint_branch.crop_size)
        self.crop_size: Tuple[int, int] = branch_size if crop_size is None else tuple(int(s) for s in crop_size)
        if self.crop_size != branch_size:
            raise ValueError(f"crop_size {self.crop_size} differs from the keypoint branch's {branch_size}")
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if crop_padding < 1.0:
            raise ValueError(f"crop_padding must be >= 1, got {crop_padding}")
        self.input_format = input_format
        self.crop_padding, self.crop_sampling_ratio = float(crop_padding), int(crop_sampling_ratio)
        aug = crop_augmentation
        if aug is not None and (aug.crop_size, aug.padding) != (self.crop_size, self.crop_padding):
            raise ValueError(
                f"crop_augmentation crops {aug.crop_size} padded by {aug.padding}, "
                f"the model {self.crop_size} by {self.crop_padding}"
            )
        self.crop_augmentation = crop_augmentation
        self.box_source = PrecomputedBoxes() if box_source is None else box_source
        self.flip_indices: List[int] = [int(i) for i in flip_indices]
        if sorted(self.flip_indices) != list(range(len(self.flip_indices))):
            raise ValueError(f"flip_indices {self.flip_indices} is not a permutation")
        self.test_flip = bool(test_flip)
        if test_precision not in TEST_PRECISIONS:
            raise ValueError(f"TEST.PRECISION must be one of {sorted(TEST_PRECISIONS)}, got {test_precision!r}")
        self.test_precision = TEST_PRECISIONS[test_precision]
        if train_precision not in ("float32", "bfloat16"):
            raise ValueError(f"train_precision must be 'float32' or 'bfloat16', got {train_precision!r}")
        self.train_precision = TEST_PRECISIONS[train_precision]
        self.test_channels_last = bool(test_channels_last)
        self.keypoint_score_thresh = float(keypoint_score_thresh)
        if not 0.0 <= oks_nms_thresh <= 1.0:
            raise ValueError(f"oks_nms_thresh must be in [0, 1], got {oks_nms_thresh}")
        if len(oks_sigmas) != len(self.flip_indices):
            raise ValueError(f"{len(oks_sigmas)} OKS sigmas for {len(self.flip_indices)} keypoints")
        self.oks_nms_thresh, self.oks_sigmas = float(oks_nms_thresh), [float(s) for s in oks_sigmas]
        self.min_keypoints_per_person = int(min_keypoints_per_person)
        # Training boxes: gt persons with enough labelled keypoints, clipped as at inference.
        self.train_box_source = GtBoxes(min_keypoints=self.min_keypoints_per_person)

    @classmethod
    def from_config(cls, cfg, box_source: Optional[PersonBoxSource] = None, training: bool = True) -> Dict[str, Any]:
        """``box_source``: overrides ``MODEL.DEPOTR.TEST_BOX_SOURCE`` (the ``Predictor``'s).
        ``training`` False: a model for inference only, without the ``INPUT.CROP_AUG`` chain
        (whose half-body augmentation needs body halves a custom skeleton may lack)."""
        if cfg.MODEL.DEPOTR.BOX_SOURCE not in TRAIN_BOX_SOURCES:
            raise ValueError(
                f"MODEL.DEPOTR.BOX_SOURCE (the training boxes) must be one of {TRAIN_BOX_SOURCES}, got "
                f"{cfg.MODEL.DEPOTR.BOX_SOURCE!r}; the inference boxes are MODEL.DEPOTR.TEST_BOX_SOURCE"
            )
        if box_source is None:
            box_source = build_box_source(cfg, cfg.MODEL.DEPOTR.TEST_BOX_SOURCE)
        keypoints = keypoint_metadata_from_config(cfg)
        if cfg.TEST.PRECISION == "float16" and _on_cpu(cfg):
            logging.getLogger(__name__).warning(
                "TEST.PRECISION float16 on a CPU: the deformable attention has no float16 CPU kernel and "
                "falls back to its slow reference; bfloat16 is the CPU's lower precision"
            )
        uses = {
            "TEST.PRECISION bfloat16": cfg.TEST.PRECISION == "bfloat16",
            "SOLVER.AMP.ENABLED": cfg.SOLVER.AMP.ENABLED,
        }
        bfloat16_keys = [key for key, used in uses.items() if used]
        if bfloat16_keys and _on_cpu(cfg) and not cpu_has_native_bfloat16():
            logging.getLogger(__name__).warning(
                "%s on a CPU without avx512_bf16 or AMX (%s): its bfloat16 convolutions and matmuls are emulated, "
                "about 20x slower than float32 (benchmarks/README.md); float32 is faster here",
                " and ".join(bfloat16_keys),
                torch.backends.cpu.get_cpu_capability(),
            )
        return {
            "keypoint_branch": build_keypoint_branch(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "flip_indices": keypoints.flip_indices,
            "input_format": cfg.INPUT.FORMAT,
            "crop_size": cfg.INPUT.CROP_SIZE,
            "crop_padding": cfg.INPUT.CROP_PADDING,
            "crop_sampling_ratio": cfg.INPUT.CROP_SAMPLING_RATIO,
            "crop_augmentation": CropAugmentation.from_config(cfg) if training else None,
            "box_source": box_source,
            "test_flip": cfg.TEST.FLIP,
            "test_precision": cfg.TEST.PRECISION,
            "train_precision": "bfloat16" if cfg.SOLVER.AMP.ENABLED and _on_cpu(cfg) else "float32",
            "test_channels_last": cfg.TEST.CHANNELS_LAST,
            "keypoint_score_thresh": cfg.MODEL.DEPOTR.KEYPOINT_SCORE_THRESH,
            "oks_nms_thresh": cfg.TEST.OKS_NMS_THRESH,
            "oks_sigmas": keypoints.oks_sigmas,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        """
        Args:
            batched_inputs: B dicts from the data mapper, each with
                * "image": (C, Hi, Wi) uint8 tensor in ``input_format``, not resized;
                * "height", "width": original image size (outputs are scaled to it);
                * "image_id": used in error messages;
                * "instances" (training; box source "gt"): ``gt_boxes`` (Boxes (N, 4) XYXY image
                  pixels), ``gt_keypoints`` (Keypoints (N, K, 3): x, y in continuous image
                  pixels, v; v = 0 unlabelled);
                * "proposals" (box source "precomputed"): ``proposal_boxes`` (Boxes (N, 4)) and
                  ``scores`` (N,).

        Returns:
            Training: the branch's scalar "loss_*" tensors (an exact zero connected to every
            trainable parameter when the batch holds no person).
            Inference: B dicts ``{"instances": Instances}`` of size "height" x "width" with
                * pred_boxes: Boxes (N, 4), the person boxes (clipped to the image);
                * scores: (N,) instance scores (:func:`rescore_instances`);
                * pred_keypoints: (N, K, 3) (x, y, score), x, y in continuous image pixels
                  (pixel i covers [i, i + 1)), as Detectron2's keypoint R-CNN;
                * pred_classes: (N,) zeros (person);
                * box_index: (N,) int64, each box's index in its source (0 for the whole image).
        """
        if not self.training:
            return self.inference(batched_inputs)

        self._check_images(batched_inputs)
        params, keypoints = [], []
        for x, (boxes, _, index) in zip(batched_inputs, self.train_box_source(batched_inputs)):
            boxes = boxes.to(self.device)
            kpts = x["instances"].gt_keypoints.tensor.to(self.device)[index.to(self.device)]
            if self.crop_augmentation is not None:
                person_params, kpts = self.crop_augmentation(boxes, kpts)
            else:
                person_params = box_crop_params(boxes, self.crop_size, self.crop_padding)
            params.append(person_params)
            keypoints.append(kpts)

        crops = self.crop(batched_inputs, params)
        targets = image_to_crop(torch.cat(keypoints), torch.cat(params), self.crop_size)
        with autocast_to(crops.device.type, self.train_precision):
            outputs = self.keypoint_branch(crops)
        losses = self.keypoint_branch.losses(outputs, targets)
        if len(crops) == 0:
            # Keep every trainable parameter in the graph (DDP) with an exact zero.
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            losses = {k: v + zero for k, v in losses.items()}
        return losses

    def _check_images(self, batched_inputs: List[Dict[str, Any]]) -> None:
        """A ValueError naming the image unless every ``image`` is (C, Hi, Wi) with the C channels
        of ``pixel_mean`` (an (Hi, Wi, C) or one-channel image failed in the crop's arithmetic)."""
        channels = len(self.pixel_mean)
        for x in batched_inputs:
            shape = tuple(x["image"].shape)
            if len(shape) != 3 or shape[0] != channels:
                raise ValueError(
                    f"image {x.get('image_id')!r}: batched_input['image'] must be a ({channels}, H, W) tensor "
                    f"in {self.input_format} order ({channels} channels as MODEL.PIXEL_MEAN), got shape {shape}"
                )

    def crop(self, batched_inputs: List[Dict[str, Any]], params: List[Tensor]) -> Tensor:
        """The (N, C, H, W) float32 normalised ((image - pixel_mean) / pixel_std) crops of the B
        inputs' ``image``s (any dtype and size) at the B (N_b, 6) crop parameters, image by image;
        outside an image the crops read 0, the mean colour."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        return crop_images(
            images, params, self.crop_size, self.crop_sampling_ratio, self.pixel_mean, self.pixel_std
        ).float()

    def inference(
        self, batched_inputs: List[Dict[str, Any]], do_postprocess: bool = True
    ) -> List[Dict[str, Instances]]:
        """Inference part of :meth:`forward` (same inputs and outputs). With
        ``do_postprocess=False`` the Instances are in the size of the input image tensors."""
        self._check_images(batched_inputs)
        person_boxes = [[t.to(self.device) for t in found] for found in self.box_source(batched_inputs)]
        params = [box_crop_params(boxes, self.crop_size, self.crop_padding) for boxes, _, _ in person_boxes]
        crops = self.crop(batched_inputs, params)
        flip_indices = self.flip_indices if self.test_flip else None
        crop_keypoints = predict_crop_keypoints(
            self.keypoint_branch, crops, flip_indices, self.test_precision, self.test_channels_last
        )
        keypoints = crop_to_image(crop_keypoints, torch.cat(params), self.crop_size)

        results = []
        per_image = keypoints.split([len(p) for p in params])
        for x, (boxes, box_scores, index), kpts in zip(batched_inputs, person_boxes, per_image):
            image_size = tuple(x["image"].shape[-2:])
            instances = Instances(image_size)
            instances.pred_boxes = Boxes(boxes.clone())  # detector_postprocess scales in place
            instances.scores = rescore_instances(box_scores, kpts[..., 2], self.keypoint_score_thresh)
            instances.pred_keypoints = kpts
            instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            instances.box_index = index
            if self.oks_nms_thresh < 1.0:
                keep = oks_nms(kpts, instances.scores, Boxes(boxes).area(), self.oks_sigmas, self.oks_nms_thresh)
                instances = instances[keep.sort().values]  # drop duplicates, keep the box order
            if do_postprocess:
                instances = detector_postprocess(
                    instances, x.get("height", image_size[0]), x.get("width", image_size[1])
                )
            results.append({"instances": instances})
        return results


def build_pose_model(cfg: CfgNode, *, training: bool, **kwargs: Any) -> nn.Module:
    """``cfg``'s ``MODEL.META_ARCHITECTURE`` (DePOTR's pose model) from Detectron2's registry, on
    torch's default device (Detectron2's ``build_model``, the trainer's, also moves it to
    ``MODEL.DEVICE``). ``training`` False: for inference only, without the ``INPUT.CROP_AUG`` chain
    (``TopDownPoseEstimator.from_config``); ``kwargs``: its other ``from_config`` arguments."""
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg, training=training, **kwargs)


def check_pose_config(cfg: CfgNode) -> None:
    """A ConfigError unless ``MODEL.META_ARCHITECTURE`` of ``cfg`` is DePOTR's pose model
    (``TopDownPoseEstimator`` or a registered subclass), e.g. for a Detectron2 detector's config
    given as the pose model's (it built a GeneralizedRCNN, which failed later or ran as it)."""
    name = cfg.MODEL.META_ARCHITECTURE
    try:
        meta_arch = META_ARCH_REGISTRY.get(name)
    except KeyError as e:
        raise ConfigError(f"MODEL.META_ARCHITECTURE {name!r}: {e.args[0] if e.args else e}") from e
    if not (isinstance(meta_arch, type) and issubclass(meta_arch, TopDownPoseEstimator)):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE is {name!r}, not DePOTR's pose model TopDownPoseEstimator: is the config a "
            "Detectron2 detector's? The person detector's config goes in MODEL.DEPOTR.DETECTOR.CONFIG_FILE"
        )
