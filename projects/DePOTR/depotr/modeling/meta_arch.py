"""Top-down pose estimation meta-architecture: person boxes -> RoIAlign crops -> keypoint branch.

Shape letters: B images, N persons (of one image, or of the batch where said), K keypoints,
C = 3 channels, (H, W) the crop size (``INPUT.CROP_SIZE``).

The top-down recipe is SimpleBaseline's (Xiao et al., "Simple Baselines for Human Pose
Estimation and Tracking", ECCV 2018): boxes grown to the crop aspect and padded by 1.25,
instance score = box score x mean confident keypoint score, flip test. The keypoint branch is
DePOTR's (Straka, "Automatic Human Pose Estimation using Neural Network", the seed thesis) or a
baseline head, built by ``depotr.modeling.build_keypoint_branch``.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances

from ..data.keypoint_metadata import COCO_PERSON_OKS_SIGMAS, keypoint_metadata_from_config, upper_body_mask
from .box_sources import (
    JITTER_DISTRIBUTIONS,
    TRAIN_BOX_SOURCES,
    GtBoxes,
    HalfBodyBoxes,
    PersonBoxes,
    PersonBoxSource,
    PrecomputedBoxes,
    build_box_source,
    jitter_boxes,
)
from .crops import crop_images, crop_raw_images, crop_to_image, expand_boxes_to_aspect, image_to_crop
from .keypoint_branches import KeypointBranch, build_keypoint_branch
from .oks_nms import oks_nms
from .tta import predict_crop_keypoints

__all__ = ["TopDownPoseEstimator", "rescore_instances"]

logger = logging.getLogger(__name__)


def rescore_instances(box_scores: Tensor, keypoint_scores: Tensor, thresh: float) -> Tensor:
    """SimpleBaseline's instance rescoring: box score x mean of the keypoint scores > ``thresh``.

    When no keypoint of a person scores above ``thresh`` the mean of all its keypoint scores is
    used instead (SimpleBaseline would give 0): such persons keep their relative order and, for
    equal box scores, still rank below every person with a confident keypoint.

    Args:
        box_scores: (N,) person box scores.
        keypoint_scores: (N, K) keypoint scores.
        thresh: keypoint score threshold (``MODEL.DEPOTR.KEYPOINT_SCORE_THRESH``).

    Returns:
        (N,) instance scores.
    """
    above = keypoint_scores > thresh
    count = above.sum(dim=1)
    mean_above = (keypoint_scores * above).sum(dim=1) / count.clamp(min=1)
    factor = torch.where(count > 0, mean_above, keypoint_scores.mean(dim=1))
    return box_scores * factor


@META_ARCH_REGISTRY.register()
class TopDownPoseEstimator(nn.Module):
    """Crops every person box of a batch with one RoIAlign call and runs a keypoint branch.

    Training uses the ground-truth boxes of persons with at least ``min_keypoints_per_person``
    labelled keypoints (the ``gt`` box source, unclipped; some replaced by half-body boxes when
    ``half_body`` is set, then jittered) and returns the branch's losses. Inference takes boxes
    from ``box_source`` (``gt``, ``precomputed`` = ``batched_input["proposals"]``, e.g. a
    detector's, or ``whole_image``: ``depotr.modeling.box_sources``, whose one policy checks,
    filters, sorts and clips them; a detector runs outside the model, ``PoseWithDetector``),
    crops from the uint8 image (``crop_raw_images``: no float copy of the whole image) and returns
    Detectron2 ``Instances`` with keypoints in original image pixels.
    """

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
        box_jitter_scale: float = 0.0,
        box_jitter_shift: float = 0.0,
        box_jitter_distribution: str = "uniform",
        half_body: Optional[HalfBodyBoxes] = None,
        box_source: Optional[PersonBoxSource] = None,
        test_flip: bool = False,
        keypoint_score_thresh: float = 0.2,
        oks_nms_thresh: float = 1.0,
        oks_sigmas: Sequence[float] = COCO_PERSON_OKS_SIGMAS,
        min_keypoints_per_person: int = 1,
    ):
        """
        Args:
            keypoint_branch: a :class:`KeypointBranch` (``forward(crops)``, ``losses``,
                ``decode``, ``flip_back``, ``crop_size``).
            pixel_mean, pixel_std: per-channel normalisation, in the order of ``input_format``.
            flip_indices: (K,) index of each keypoint's left/right mirror partner.
            input_format: channel order of ``batched_input["image"]`` ("RGB" or "BGR").
            crop_size: (H, W) of the crops; default (and must equal) ``keypoint_branch.crop_size``.
            crop_padding: factor applied to a box after growing it to the aspect W:H.
            crop_sampling_ratio: RoIAlign samples per bin side (0 = adaptive, see ``crop_images``).
            box_jitter_scale, box_jitter_shift, box_jitter_distribution: training box jitter
                (see ``jitter_boxes``).
            half_body: training half-body boxes, applied before the jitter; None: off.
            box_source: where the person boxes come from at inference (a
                ``depotr.modeling.box_sources.PersonBoxSource``, e.g. ``build_box_source``);
                default ``PrecomputedBoxes()`` (all proposals, at most 100 per image).
            test_flip: average with the mirrored crops' predictions (``tta.flip_test``).
            keypoint_score_thresh: threshold of :func:`rescore_instances`.
            oks_nms_thresh: per image, a person whose pose has OKS above this with a
                higher-scoring one is dropped (:func:`oks_nms`, box areas as scales); 1 disables.
            oks_sigmas: (K,) per-keypoint OKS sigmas of the OKS-NMS.
            min_keypoints_per_person: training skips gt persons with fewer labelled (v > 0)
                keypoints (they would add no loss).
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
        self.input_format = input_format
        if crop_padding < 1.0:
            raise ValueError(f"crop_padding must be >= 1, got {crop_padding}")
        self.crop_padding = float(crop_padding)
        self.crop_sampling_ratio = int(crop_sampling_ratio)
        if not 0.0 <= box_jitter_scale < 1.0 or box_jitter_shift < 0.0:
            raise ValueError(
                f"need 0 <= box_jitter_scale < 1 and box_jitter_shift >= 0, got {box_jitter_scale}, {box_jitter_shift}"
            )
        self.box_jitter_scale = float(box_jitter_scale)
        self.box_jitter_shift = float(box_jitter_shift)
        if box_jitter_distribution not in JITTER_DISTRIBUTIONS:
            raise ValueError(
                f"MODEL.DEPOTR.BOX_JITTER_DISTRIBUTION must be one of {JITTER_DISTRIBUTIONS}, "
                f"got {box_jitter_distribution!r}"
            )
        self.box_jitter_distribution = box_jitter_distribution
        if half_body is not None and tuple(half_body.crop_size) != self.crop_size:
            raise ValueError(f"half_body crop_size {half_body.crop_size} differs from {self.crop_size}")
        self.half_body = half_body
        # No weights: a detector runs outside the model (depotr.modeling.person_detector).
        self.box_source = PrecomputedBoxes() if box_source is None else box_source
        self.flip_indices: List[int] = [int(i) for i in flip_indices]
        if sorted(self.flip_indices) != list(range(len(self.flip_indices))):
            raise ValueError(f"flip_indices {self.flip_indices} is not a permutation")
        self.test_flip = bool(test_flip)
        self.keypoint_score_thresh = float(keypoint_score_thresh)
        if not 0.0 <= oks_nms_thresh <= 1.0:
            raise ValueError(f"oks_nms_thresh must be in [0, 1], got {oks_nms_thresh}")
        if len(oks_sigmas) != len(self.flip_indices):
            raise ValueError(f"{len(oks_sigmas)} OKS sigmas for {len(self.flip_indices)} keypoints")
        self.oks_nms_thresh = float(oks_nms_thresh)
        self.oks_sigmas = [float(s) for s in oks_sigmas]
        self.min_keypoints_per_person = int(min_keypoints_per_person)
        # The training boxes: gt persons with enough labelled keypoints, not clipped.
        self.train_box_source = GtBoxes(min_keypoints=self.min_keypoints_per_person, clip=False)

    @classmethod
    def from_config(cls, cfg, box_source: Optional[PersonBoxSource] = None) -> Dict[str, Any]:
        """``box_source``: overrides ``MODEL.DEPOTR.TEST_BOX_SOURCE`` (the ``Predictor``'s)."""
        if cfg.MODEL.DEPOTR.BOX_SOURCE not in TRAIN_BOX_SOURCES:
            raise ValueError(
                f"MODEL.DEPOTR.BOX_SOURCE (the training boxes) must be one of {TRAIN_BOX_SOURCES}, got "
                f"{cfg.MODEL.DEPOTR.BOX_SOURCE!r}; the inference boxes are MODEL.DEPOTR.TEST_BOX_SOURCE"
            )
        if box_source is None:
            box_source = build_box_source(cfg, cfg.MODEL.DEPOTR.TEST_BOX_SOURCE)
        keypoints = keypoint_metadata_from_config(cfg)
        aug = cfg.INPUT.AUG
        half_body = None
        if aug.ENABLED and aug.HALF_BODY_PROB > 0:
            half_body = HalfBodyBoxes(
                upper_body_mask(keypoints.names),
                cfg.INPUT.CROP_SIZE,
                aug.HALF_BODY_PROB,
                aug.HALF_BODY_MIN_KEYPOINTS,
                aug.HALF_BODY_MIN_PART_KEYPOINTS,
                aug.HALF_BODY_PADDING,
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
            "box_jitter_scale": cfg.MODEL.DEPOTR.BOX_JITTER_SCALE,
            "box_jitter_shift": cfg.MODEL.DEPOTR.BOX_JITTER_SHIFT,
            "box_jitter_distribution": cfg.MODEL.DEPOTR.BOX_JITTER_DISTRIBUTION,
            "half_body": half_body,
            "box_source": box_source,
            "test_flip": cfg.TEST.FLIP,
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
                * "instances" (training; inference with box source "gt"): ``gt_boxes``
                  (Boxes (N, 4) XYXY image pixels), ``gt_keypoints`` (Keypoints (N, K, 3):
                  x, y in continuous image pixels, v; v = 0 means unlabelled);
                * "proposals" (inference with box source "precomputed"): ``proposal_boxes``
                  (Boxes (N, 4) XYXY image pixels) and ``scores`` (N,).

        Returns:
            Training: the keypoint branch's dict of scalar "loss_*" tensors (zero, but
            connected to every trainable parameter, when the batch holds no person).
            Inference: B dicts ``{"instances": Instances}`` of size "height" x "width" with
                * pred_boxes: Boxes (N, 4), the person boxes (clipped to the image);
                * scores: (N,) box score x mean confident keypoint score (``rescore_instances``);
                * pred_keypoints: (N, K, 3) (x, y, score), x, y in continuous image pixels
                  (pixel i covers [i, i + 1)), as Detectron2's keypoint R-CNN;
                * pred_classes: (N,) zeros (person);
                * box_index: (N,) int64, the index of each person's box in its source: the
                  input's ``proposals``, its gt ``instances`` or the detector's boxes (0 for the
                  whole image).
        """
        if not self.training:
            return self.inference(batched_inputs)

        images = self.preprocess_image(batched_inputs)
        crop_boxes, keypoints = [], []
        for x, (boxes, _, index) in zip(batched_inputs, self.train_box_source(batched_inputs)):
            boxes = boxes.to(self.device)
            kpts = x["instances"].gt_keypoints.tensor.to(self.device)[index.to(self.device)]
            if self.half_body is not None:
                boxes = self.half_body(boxes, kpts)
            boxes = jitter_boxes(boxes, self.box_jitter_scale, self.box_jitter_shift, self.box_jitter_distribution)
            crop_boxes.append(expand_boxes_to_aspect(boxes, self.crop_size, self.crop_padding))
            keypoints.append(kpts)

        crops = crop_images(images.tensor, crop_boxes, self.crop_size, self.crop_sampling_ratio)
        targets = image_to_crop(torch.cat(keypoints), torch.cat(crop_boxes), self.crop_size)
        outputs = self.keypoint_branch(crops)
        losses = self.keypoint_branch.losses(outputs, targets)
        if len(crops) == 0:
            # Keep every trainable parameter in the graph (DDP) with an exact zero.
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            losses = {k: v + zero for k, v in losses.items()}
        return losses

    def preprocess_image(self, batched_inputs: List[Dict[str, Any]]) -> ImageList:
        """Normalises ((image - pixel_mean) / pixel_std) and pads the images to one (B, C, Hp, Wp)
        batch; the padding is 0, i.e. the mean colour, which is also what crops read outside
        an image."""
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, size_divisibility=0, pad_value=0.0)

    def _inference_boxes(self, batched_inputs: List[Dict[str, Any]]) -> List[PersonBoxes]:
        """Per image the ``box_source``'s (boxes (N, 4) XYXY image pixels, scores (N,), int64 (N,)
        index of each box in its source), on the model's device."""
        return [PersonBoxes(*(t.to(self.device) for t in found)) for found in self.box_source(batched_inputs)]

    def inference(
        self, batched_inputs: List[Dict[str, Any]], do_postprocess: bool = True
    ) -> List[Dict[str, Instances]]:
        """Inference part of :meth:`forward` (same inputs and outputs). With
        ``do_postprocess=False`` the Instances are in the size of the input image tensors."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        boxes_scores = self._inference_boxes(batched_inputs)
        crop_boxes = [expand_boxes_to_aspect(b, self.crop_size, self.crop_padding) for b, _, _ in boxes_scores]
        crops = crop_raw_images(
            images, crop_boxes, self.crop_size, self.crop_sampling_ratio, self.pixel_mean, self.pixel_std
        )
        flip_indices = self.flip_indices if self.test_flip else None
        crop_keypoints = predict_crop_keypoints(self.keypoint_branch, crops, flip_indices)
        keypoints = crop_to_image(crop_keypoints, torch.cat(crop_boxes), self.crop_size)

        results = []
        per_image = keypoints.split([len(b) for b in crop_boxes])
        for x, image, (boxes, box_scores, index), kpts in zip(batched_inputs, images, boxes_scores, per_image):
            image_size = tuple(image.shape[-2:])
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
                height = x.get("height", image_size[0])
                width = x.get("width", image_size[1])
                instances = detector_postprocess(instances, height, width)
            results.append({"instances": instances})
        return results
