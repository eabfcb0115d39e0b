"""Where the person boxes of the top-down pipeline come from.

Shape letters: N persons of one image, K keypoints.

* ``gt``: the annotated boxes (training, or evaluation with ground-truth boxes); while training
  :class:`HalfBodyBoxes` may replace some by half-body boxes and :func:`jitter_boxes` rescales
  and shifts them.
* ``precomputed``: ``batched_input["proposals"]`` (e.g. SimpleBaseline's
  ``COCO_val2017_detections_AP_H_56_person.json`` loaded by the data pipeline), filtered by
  :func:`select_boxes`.
* ``detector``: a Detectron2 detector run on the same inputs, :class:`PersonDetector`.

Every source returns per image ``(boxes (N, 4) XYXY image pixels, scores (N,))``. A new source
(e.g. "whole_image") is one more function with that signature plus one name in
``TopDownPoseEstimator._inference_boxes``.
"""
import logging
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data.transforms import ResizeShortestEdge

from .crops import expand_boxes_to_aspect

__all__ = [
    "JITTER_DISTRIBUTIONS",
    "HalfBodyBoxes",
    "jitter_boxes",
    "gt_boxes",
    "precomputed_boxes",
    "select_boxes",
    "resolve_model_zoo_path",
    "PersonDetector",
    "build_person_detector",
]

logger = logging.getLogger(__name__)

# Prefix of DETECTOR.CONFIG_FILE / DETECTOR.WEIGHTS naming a file of Detectron2's model zoo.
MODEL_ZOO_PREFIX = "model_zoo:"


# MODEL.DEPOTR.BOX_JITTER_DISTRIBUTION values.
JITTER_DISTRIBUTIONS = ("uniform", "normal")


def jitter_boxes(boxes: Tensor, scale: float, shift: float, distribution: str = "uniform") -> Tensor:
    """Randomly rescales and shifts each box independently (training augmentation).

    Width and height are multiplied by one factor 1 + r_0 scale; the centre moves by
    r_1 shift x width in x and r_2 shift x height in y (sizes of the input box). The r_i are drawn
    from U[-1, 1] ("uniform") or from N(0, 1) clipped to [-1, 1] ("normal": SimpleBaseline /
    HRNet's ``clip(randn() * sf + 1, 1 - sf, 1 + sf)`` scale factor; about 32 % land on a bound).
    Uses the torch RNG of ``boxes.device``, so ``torch.manual_seed`` makes it reproducible.

    Args:
        boxes: (N, 4) XYXY boxes.
        scale: relative scale range, in [0, 1).
        shift: centre shift range as a fraction of the box size, >= 0.
        distribution: one of :data:`JITTER_DISTRIBUTIONS`.

    Returns:
        (N, 4) jittered XYXY boxes.
    """
    if not 0.0 <= scale < 1.0 or shift < 0.0:
        raise ValueError(f"box jitter needs 0 <= scale < 1 and shift >= 0, got scale={scale}, shift={shift}")
    if distribution not in JITTER_DISTRIBUTIONS:
        raise ValueError(f"box jitter distribution must be one of {JITTER_DISTRIBUTIONS}, got {distribution!r}")
    if boxes.numel() == 0 or (scale == 0.0 and shift == 0.0):
        return boxes
    if distribution == "uniform":
        r = torch.rand((len(boxes), 3), dtype=boxes.dtype, device=boxes.device) * 2.0 - 1.0
    else:
        r = torch.randn((len(boxes), 3), dtype=boxes.dtype, device=boxes.device).clamp(-1.0, 1.0)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5 + r[:, 1] * shift * w
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5 + r[:, 2] * shift * h
    factor = 1.0 + r[:, 0] * scale
    half_w = w * factor * 0.5
    half_h = h * factor * 0.5
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)


class HalfBodyBoxes:
    """Half-body augmentation of training person boxes (SimpleBaseline / HRNet's
    ``half_body_transform``): crops of only the upper or the lower body, so that the model learns
    truncated persons. N persons, K keypoints.

    Per person with at least ``min_keypoints`` labelled (v > 0) keypoints, with probability
    ``prob``: a body half qualifies when at least ``min_part_keypoints`` of its keypoints are
    labelled; of two qualifying halves one is drawn with probability 1/2 each (HRNet's code draws
    ``np.random.randn() < 0.5``, 69 % upper, evidently meant as a fair coin). The new box is the
    box of that half's labelled keypoints grown to the crop aspect W:H about its centre and scaled
    by ``padding`` (:func:`~depotr.modeling.crops.expand_boxes_to_aspect`); HRNet centres it on
    the keypoints' mean instead, which can leave keypoints outside. Persons without a qualifying
    half, or whose chosen keypoints all coincide (a box of size 0), keep their box.
    """

    def __init__(
        self,
        upper_body: Sequence[bool],
        crop_size: Sequence[int],
        prob: float,
        min_keypoints: int = 9,
        min_part_keypoints: int = 3,
        padding: float = 1.2,
    ):
        """
        Args:
            upper_body: (K,) whether each keypoint is in the upper half
                (``keypoint_metadata.upper_body_mask``); the others form the lower half.
            crop_size: (H, W) of the crops, whose aspect the half-body box takes.
            prob: probability per eligible person, in [0, 1] (``INPUT.AUG.HALF_BODY_PROB``).
            min_keypoints: labelled keypoints a person needs (``HALF_BODY_MIN_KEYPOINTS``).
            min_part_keypoints: labelled keypoints a half needs, >= 2
                (``HALF_BODY_MIN_PART_KEYPOINTS``).
            padding: factor >= 1 on the aspect-grown keypoint box (``HALF_BODY_PADDING``).
        """
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"INPUT.AUG.HALF_BODY_PROB must be in [0, 1], got {prob}")
        if min_part_keypoints < 2:
            raise ValueError(
                f"INPUT.AUG.HALF_BODY_MIN_PART_KEYPOINTS must be >= 2 (a box needs 2 points), got {min_part_keypoints}"
            )
        if padding < 1.0:
            raise ValueError(f"INPUT.AUG.HALF_BODY_PADDING must be >= 1, got {padding}")
        if all(upper_body) or not any(upper_body):
            raise ValueError(
                f"half-body augmentation needs upper- and lower-body keypoints, got upper_body={list(upper_body)}"
            )
        self.upper_body = [bool(u) for u in upper_body]
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.prob = float(prob)
        self.min_keypoints = int(min_keypoints)
        self.min_part_keypoints = int(min_part_keypoints)
        self.padding = float(padding)

    def __call__(self, boxes: Tensor, keypoints: Tensor) -> Tensor:
        """
        Args:
            boxes: (N, 4) XYXY person boxes in image pixels.
            keypoints: (N, K, 3) (x, y, v) in image pixels, v > 0 labelled.
        Returns:
            (N, 4) boxes: half-body boxes where drawn, else the input boxes. Uses the torch RNG
            of ``boxes.device`` (two draws per person).
        """
        if keypoints.shape[1] != len(self.upper_body):
            raise ValueError(f"half-body augmentation for {len(self.upper_body)} keypoints got {keypoints.shape[1]}")
        r = torch.rand((len(boxes), 2), dtype=boxes.dtype, device=boxes.device)
        labelled = keypoints[..., 2] > 0
        upper = torch.tensor(self.upper_body, device=keypoints.device)
        in_upper, in_lower = labelled & upper, labelled & ~upper
        upper_ok = in_upper.sum(1) >= self.min_part_keypoints
        lower_ok = in_lower.sum(1) >= self.min_part_keypoints
        take_upper = upper_ok & (~lower_ok | (r[:, 1] < 0.5))
        chosen = torch.where(take_upper[:, None], in_upper, in_lower)  # (N, K)
        far = torch.finfo(keypoints.dtype).max
        x, y = keypoints[..., 0], keypoints[..., 1]
        x0, y0 = torch.where(chosen, x, far).amin(1), torch.where(chosen, y, far).amin(1)
        x1, y1 = torch.where(chosen, x, -far).amax(1), torch.where(chosen, y, -far).amax(1)
        use = (
            (labelled.sum(1) >= self.min_keypoints)
            & (r[:, 0] < self.prob)
            & (upper_ok | lower_ok)
            & ((x1 > x0) | (y1 > y0))
        )
        tight = torch.where(use[:, None], torch.stack([x0, y0, x1, y1], dim=1).to(boxes.dtype), boxes)
        return torch.where(use[:, None], expand_boxes_to_aspect(tight, self.crop_size, self.padding), boxes)


def gt_boxes(batched_input: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
    """Returns the annotated person boxes of one input and scores of 1.

    Raises a KeyError naming the image when the input has no ``"instances"``.
    """
    if "instances" not in batched_input:
        raise KeyError(
            f"image {batched_input.get('image_id')!r} has no 'instances': box source 'gt' needs "
            "the ground-truth Instances (gt_boxes) the data mapper adds"
        )
    boxes = batched_input["instances"].gt_boxes.tensor
    return boxes, boxes.new_ones(len(boxes))


def select_boxes(boxes: Tensor, scores: Tensor, score_thresh: float, topk: int, return_index: bool = False
                 ) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]:
    """Keeps boxes with score >= ``score_thresh``, then the ``topk`` highest scoring.

    Args:
        boxes: (N, 4); scores: (N,).
        score_thresh: minimum score kept.
        topk: maximum number kept (<= 0: no limit).
        return_index: also return where each kept box was in ``boxes``.

    Returns:
        (M, 4) boxes and (M,) scores, sorted by decreasing score (stable); with
        ``return_index`` also their (M,) int64 indices into ``boxes``.
    """
    index = torch.nonzero(scores >= score_thresh).flatten()
    order = index[torch.argsort(scores[index], descending=True, stable=True)]
    if topk > 0:
        order = order[:topk]
    return (boxes[order], scores[order], order) if return_index else (boxes[order], scores[order])


def precomputed_boxes(batched_input: Dict[str, Any], score_thresh: float, topk: int, return_index: bool = False
                      ) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]:
    """Person boxes given with the input as ``batched_input["proposals"]``
    (Instances with ``proposal_boxes`` (Boxes XYXY image pixels) and ``scores`` (N,)),
    filtered by :func:`select_boxes` (``return_index``: also their indices in the proposals).

    Raises a KeyError naming the image when the input has no ``"proposals"``.
    """
    if "proposals" not in batched_input:
        raise KeyError(
            f"image {batched_input.get('image_id')!r} has no 'proposals': box source 'precomputed' "
            "expects batched_input['proposals'] = Instances(proposal_boxes=Boxes (N, 4) XYXY in "
            "image pixels, scores=(N,)). Load person detections with DATASETS.PRECOMPUTED_BOXES, "
            "or use MODEL.DEPOTR.TEST_BOX_SOURCE 'gt' / 'detector'"
        )
    proposals = batched_input["proposals"]
    return select_boxes(proposals.proposal_boxes.tensor, proposals.scores, score_thresh, topk, return_index)


def resolve_model_zoo_path(path: str, checkpoint: bool = False) -> str:
    """Resolves ``"model_zoo:<config path in Detectron2's configs/>"``.

    For a config file it returns the installed file (``model_zoo.get_config_file``); with
    ``checkpoint=True`` the URL of that config's trained weights
    (``model_zoo.get_checkpoint_url``). Other paths (files, ``detectron2://`` URLs) are
    returned unchanged.
    """
    if not path.startswith(MODEL_ZOO_PREFIX):
        return path
    from detectron2 import model_zoo

    name = path[len(MODEL_ZOO_PREFIX):].lstrip("/")
    return model_zoo.get_checkpoint_url(name) if checkpoint else model_zoo.get_config_file(name)


class PersonDetector(nn.Module):
    """A frozen Detectron2 detector (e.g. GeneralizedRCNN) giving person boxes.

    It stays in eval mode whatever ``train()`` is called with, and its parameters do not
    require grad. Inputs are converted to the detector's channel order and resized like
    ``DefaultPredictor`` does (shortest edge ``min_size_test``, longest at most
    ``max_size_test``); the detector's outputs are in the input's ``height`` x ``width``.
    """

    def __init__(
        self,
        detector: nn.Module,
        *,
        detector_format: str,
        min_size_test: int,
        max_size_test: int,
        score_thresh: float,
        person_class_id: int,
    ):
        super().__init__()
        self.detector = detector
        self.detector_format = detector_format
        self.min_size_test = min_size_test
        self.max_size_test = max_size_test
        self.score_thresh = score_thresh
        self.person_class_id = person_class_id
        for p in self.detector.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "PersonDetector":
        """Keeps the detector in eval mode (it is never trained here)."""
        return super().train(False)

    def _detector_input(self, batched_input: Dict[str, Any], input_format: str) -> Dict[str, Any]:
        image = batched_input["image"]
        if input_format != self.detector_format:
            if {input_format, self.detector_format} != {"RGB", "BGR"}:
                raise ValueError(f"cannot convert images from {input_format} to the detector's {self.detector_format}")
            image = image.flip(0)
        h, w = image.shape[-2:]
        if self.min_size_test > 0:
            new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, self.min_size_test, self.max_size_test)
            if (new_h, new_w) != (h, w):
                image = F.interpolate(
                    image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
                )[0]
        return {
            "image": image,
            "height": batched_input.get("height", h),
            "width": batched_input.get("width", w),
        }

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict[str, Any]], input_format: str) -> List[Tuple[Tensor, Tensor]]:
        """Per image ``(boxes (N, 4) XYXY in the input's pixels, scores (N,))`` of the person
        class with score >= ``score_thresh``, sorted by decreasing score. Boxes that are
        degenerate (non-finite, width or height <= 0) are dropped and counted in the log."""
        outputs = self.detector([self._detector_input(x, input_format) for x in batched_inputs])
        results = []
        for x, out in zip(batched_inputs, outputs):
            instances = out["instances"]
            keep = (instances.pred_classes == self.person_class_id) & (instances.scores >= self.score_thresh)
            boxes = instances.pred_boxes.tensor[keep]
            scores = instances.scores[keep]
            valid = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not bool(valid.all()):
                logger.warning(
                    "Dropped %d degenerate detector person boxes of image %r", int((~valid).sum()), x.get("image_id")
                )
                boxes, scores = boxes[valid], scores[valid]
            order = torch.argsort(scores, descending=True, stable=True)
            results.append((boxes[order], scores[order]))
        return results


def build_person_detector(cfg: CfgNode) -> PersonDetector:
    """Builds the detector of ``cfg.MODEL.DEPOTR.DETECTOR``.

    ``DETECTOR.CONFIG_FILE`` is a Detectron2 yaml config (a path, or ``"model_zoo:<path in
    Detectron2's configs/>"``, e.g. ``"model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``;
    lazy ``.py`` configs are not supported). ``DETECTOR.WEIGHTS`` is loaded with
    ``DetectionCheckpointer`` (a path, a ``detectron2://`` URL, or ``"model_zoo:<config path>"``
    for that config's trained weights); empty leaves the detector randomly initialised (warned).
    The detector's test score thresholds are lowered to ``DETECTOR.SCORE_THRESH`` when higher, so
    that it does not drop boxes this threshold would keep.
    """
    from detectron2.modeling import build_model

    det = cfg.MODEL.DEPOTR.DETECTOR
    if not det.CONFIG_FILE:
        raise ValueError("MODEL.DEPOTR.BOX_SOURCE 'detector' needs MODEL.DEPOTR.DETECTOR.CONFIG_FILE")
    det_cfg = get_cfg()
    det_cfg.merge_from_file(resolve_model_zoo_path(det.CONFIG_FILE))
    det_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, det.SCORE_THRESH)
    det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = min(det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST, det.SCORE_THRESH)
    model = build_model(det_cfg)
    if det.WEIGHTS:
        DetectionCheckpointer(model).load(resolve_model_zoo_path(det.WEIGHTS, checkpoint=True))
    else:
        logger.warning(
            "MODEL.DEPOTR.DETECTOR.WEIGHTS is empty: the person detector %s is randomly initialised", det.CONFIG_FILE
        )
    return PersonDetector(
        model,
        detector_format=det_cfg.INPUT.FORMAT,
        min_size_test=det_cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=det_cfg.INPUT.MAX_SIZE_TEST,
        score_thresh=det.SCORE_THRESH,
        person_class_id=det.PERSON_CLASS_ID,
    )
