"""The person detector of the top-down pipeline, outside the pose model.

Shape letters: B images, N persons of one image.

The pose model (``TopDownPoseEstimator``) takes boxes only (:mod:`depotr.modeling.box_sources`,
which holds the one box policy). :class:`PersonDetector` turns images into ``"proposals"``, which
the pose model ranks, filters and clips as any precomputed boxes: in :class:`PoseWithDetector`
(``MODEL.DEPOTR.TEST_BOX_SOURCE "detector"`` in ``Trainer.test``), in ``depotr.Predictor`` and the
demo. So pose checkpoints hold the pose model only; the detector loads ``MODEL.DEPOTR.DETECTOR.WEIGHTS``
under the rule of the pose weights (``depotr.engine.checkpoint``): every parameter from a detector
checkpoint, or random weights only when asked for (``--random-weights``, ``random_weights=True``).
"""

import logging
import os
from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import CfgNode, get_cfg
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.structures import Boxes, Instances

from ..cli import RANDOM_WEIGHTS_FLAG, ConfigError

__all__ = [
    "MODEL_ZOO_PREFIX",
    "PersonDetector",
    "PoseWithDetector",
    "build_person_detector",
    "detector_weights_to_load",
    "resolve_model_zoo_path",
]

logger = logging.getLogger(__name__)

# Prefix of DETECTOR.CONFIG_FILE / DETECTOR.WEIGHTS naming a file of Detectron2's model zoo.
MODEL_ZOO_PREFIX = "model_zoo:"


def resolve_model_zoo_path(path: str, checkpoint: bool = False) -> str:
    """``"model_zoo:<config path in Detectron2's configs/>"`` as the installed config file, or with
    ``checkpoint=True`` the URL of its trained weights; other paths (files, URLs) unchanged."""
    if not path.startswith(MODEL_ZOO_PREFIX):
        return path
    from detectron2 import model_zoo

    name = path[len(MODEL_ZOO_PREFIX) :].lstrip("/")
    return model_zoo.get_checkpoint_url(name) if checkpoint else model_zoo.get_config_file(name)


class PersonDetector(nn.Module):
    """A frozen Detectron2 detector (e.g. GeneralizedRCNN) giving person proposals: always in eval
    mode, no grad. Inputs are converted to the detector's channel order and resized as
    ``DefaultPredictor`` does (shortest edge ``min_size_test``, longest <= ``max_size_test``); the
    boxes are in the pixels of the input's image tensor, the frame of ``"proposals"``."""

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
        self.detector.requires_grad_(False)
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
        return {"image": image, "height": h, "width": w}

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict[str, Any]], input_format: str) -> List[Instances]:
        """Per input (``"image"``: (C, H, W) in ``input_format``) the ``"proposals"`` of the pose
        model: Instances of size (H, W) with ``proposal_boxes`` (Boxes (N, 4) XYXY in image
        pixels) and ``scores`` (N,) of the person class scoring >= ``score_thresh``, in the
        detector's order (checking, ranking and clipping: the pose model's box source)."""
        if not batched_inputs:
            return []
        outputs = self.detector([self._detector_input(x, input_format) for x in batched_inputs])
        results = []
        for x, out in zip(batched_inputs, outputs):
            instances = out["instances"]
            keep = (instances.pred_classes == self.person_class_id) & (instances.scores >= self.score_thresh)
            proposals = Instances(tuple(x["image"].shape[-2:]))
            proposals.proposal_boxes = Boxes(instances.pred_boxes.tensor[keep])
            proposals.scores = instances.scores[keep]
            results.append(proposals)
        return results


def detector_weights_to_load(cfg: CfgNode, random_weights: bool = False) -> bool:
    """``depotr.engine.checkpoint.weights_to_load`` for the person detector, to check before any
    work: whether to load ``MODEL.DEPOTR.DETECTOR.WEIGHTS``. A ConfigError for an empty, missing or
    unreadable (not Detectron2's) ``CONFIG_FILE``, for a local ``WEIGHTS`` path that is not a file,
    and for empty ``WEIGHTS`` without ``random_weights`` (then False, warned). Set weights load even
    with ``random_weights`` (a random pose model may run beside a trained detector)."""
    return _checked_detector_config(cfg, random_weights)[1]


def _checked_detector_config(cfg: CfgNode, random_weights: bool) -> Tuple[CfgNode, bool]:
    """Detectron2's config of the detector, and whether to load its weights (:func:`detector_weights_to_load`)."""
    det = cfg.MODEL.DEPOTR.DETECTOR
    if not det.CONFIG_FILE:
        raise ConfigError("a person detector (box source 'detector') needs MODEL.DEPOTR.DETECTOR.CONFIG_FILE")
    if not det.CONFIG_FILE.startswith(MODEL_ZOO_PREFIX) and not os.path.isfile(det.CONFIG_FILE):
        raise ConfigError(f"MODEL.DEPOTR.DETECTOR.CONFIG_FILE {det.CONFIG_FILE}: no such config file")
    det_cfg = get_cfg()
    try:
        det_cfg.merge_from_file(resolve_model_zoo_path(det.CONFIG_FILE))
    except (KeyError, ValueError, AssertionError, RuntimeError) as e:  # a DePOTR config: KeyError MODEL.DEPOTR
        reason = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConfigError(
            f"MODEL.DEPOTR.DETECTOR.CONFIG_FILE {det.CONFIG_FILE} is not a Detectron2 detector config: {reason}"
        ) from e
    if not det.WEIGHTS:
        if not random_weights:
            raise ConfigError(
                f"MODEL.DEPOTR.DETECTOR.WEIGHTS is empty: set it to the person detector's checkpoint (e.g. "
                f"{MODEL_ZOO_PREFIX}COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml), or pass {RANDOM_WEIGHTS_FLAG} "
                "(Predictor(cfg, random_weights=True)) to run a randomly initialised detector"
            )
        logger.warning(
            f"MODEL.DEPOTR.DETECTOR.WEIGHTS is empty: the person detector {det.CONFIG_FILE} runs with random weights "
            "(asked for)"
        )
        return det_cfg, False
    weights = det.WEIGHTS
    if not weights.startswith(MODEL_ZOO_PREFIX) and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.DEPOTR.DETECTOR.WEIGHTS {weights}: no such checkpoint file")
    return det_cfg, True


def build_person_detector(cfg: CfgNode, random_weights: bool = False) -> PersonDetector:
    """The detector of ``cfg.MODEL.DEPOTR.DETECTOR``: ``CONFIG_FILE``, a Detectron2 yaml config (a
    path or ``"model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"``; no lazy ``.py`` configs),
    with ``WEIGHTS`` (a path, a ``detectron2://`` URL or ``"model_zoo:<config path>"``), which must
    hold every parameter of the detector (a ConfigError naming the file and missing ones
    otherwise); empty only with ``random_weights`` (:func:`detector_weights_to_load`). Its test
    score thresholds are lowered to ``SCORE_THRESH`` when higher, so that it keeps every box this
    threshold would."""
    from detectron2.modeling import build_model

    from ..engine.checkpoint import DePOTRCheckpointer

    det = cfg.MODEL.DEPOTR.DETECTOR
    det_cfg, load_weights = _checked_detector_config(cfg, random_weights)
    det_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(det_cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, det.SCORE_THRESH)
    det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = min(det_cfg.MODEL.RETINANET.SCORE_THRESH_TEST, det.SCORE_THRESH)
    model = build_model(det_cfg)
    if load_weights:
        try:
            DePOTRCheckpointer(model).load(resolve_model_zoo_path(det.WEIGHTS, checkpoint=True))
        except ConfigError as e:
            raise ConfigError(f"MODEL.DEPOTR.DETECTOR.WEIGHTS is not a checkpoint of {det.CONFIG_FILE}: {e}") from e
    return PersonDetector(
        model,
        detector_format=det_cfg.INPUT.FORMAT,
        min_size_test=det_cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=det_cfg.INPUT.MAX_SIZE_TEST,
        score_thresh=det.SCORE_THRESH,
        person_class_id=det.PERSON_CLASS_ID,
    )


class PoseWithDetector(nn.Module):
    """Inference only (the pose model trains on gt boxes alone): what ``pose_model`` (whose box
    source reads proposals: "precomputed") returns for the inputs with ``"proposals"`` set to the
    ``detector``'s (the caller's dicts are not changed). ``input_format``: channel order of
    ``batched_input["image"]`` ("RGB" or "BGR")."""

    def __init__(self, detector: PersonDetector, pose_model: nn.Module, input_format: str):  # noqa: D107
        super().__init__()
        self.detector = detector
        self.pose_model = pose_model
        self.input_format = input_format

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        if self.training:
            raise RuntimeError("PoseWithDetector runs inference only; train the pose model on its own")
        proposals = self.detector(batched_inputs, self.input_format)
        return self.pose_model([dict(x, proposals=p) for x, p in zip(batched_inputs, proposals)])
