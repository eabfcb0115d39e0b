"""The person detector of ``MODEL.DEPOTR.DETECTOR`` with its weights, loaded under the rule of
the pose weights (:mod:`depotr.engine.checkpoint`): every parameter from a detector checkpoint, or
random weights only when asked for (``--random-weights``, ``random_weights=True``). The module it
runs in: :class:`depotr.modeling.person_detector.PersonDetector`."""

import logging
import os
from typing import Tuple

from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

from ..cli import RANDOM_WEIGHTS_FLAG, ConfigError
from ..modeling.person_detector import MODEL_ZOO_PREFIX, PersonDetector, resolve_model_zoo_path
from .checkpoint import DePOTRCheckpointer

__all__ = ["build_person_detector", "detector_weights_to_load"]

logger = logging.getLogger(__name__)


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
