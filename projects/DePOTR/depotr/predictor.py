"""The Python inference API: images (arrays or files) -> person keypoints, in the spirit of
Detectron2's ``DefaultPredictor``.

Shape letters: B images, N persons of one image, K keypoints, (H, W) an image's size.

    cfg = load_depotr_config("configs/depotr_hm_r18_synthetic.yaml", ["MODEL.WEIGHTS", "model_final.pth"])
    predictor = Predictor(cfg)
    instances = predictor(cv2.imread("photo.jpg"))  # or predictor("photo.jpg")
    instances.pred_keypoints  # (N, K, 3) x, y in image pixels, score
"""

import logging
import os
from typing import Hashable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from detectron2.config import CfgNode
from detectron2.structures import Boxes, BoxMode, Instances

from .config import log_device
from .data.image_io import read_image_bgr, to_bgr_uint8
from .engine.checkpoint import DePOTRCheckpointer, weights_to_load
from .engine.detector import build_person_detector
from .modeling.box_sources import PrecomputedBoxes, build_box_source, check_boxes
from .modeling.meta_arch import build_pose_model, check_pose_config

__all__ = ["Predictor", "person_proposals"]

logger = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, os.PathLike]
BoxesLike = Union[np.ndarray, Tensor, Boxes, Sequence[Sequence[float]]]
ScoresLike = Union[np.ndarray, Tensor, Sequence[float]]
_NORMALISED_MAX_COORD, _NORMALISED_MIN_SIDE = 1.5, 32  # see person_proposals


def person_proposals(
    boxes: BoxesLike,
    scores: Optional[ScoresLike],
    image_size: Tuple[int, int],
    box_mode: BoxMode = BoxMode.XYXY_ABS,
    image_id: Optional[Hashable] = None,
) -> Instances:
    """The ``"proposals"`` of one model input (box source "precomputed"), converted to XYXY. The
    boxes obey the box sources' rule 1 (:func:`depotr.modeling.box_sources.check_boxes`), checked
    here in ``box_mode`` so that an error shows a box as the caller gave it. Boxes that look
    normalised to [0, 1] (all coordinates <= 1.5 on an image whose long side exceeds 32 pixels) are
    warned about.

    Args:
        boxes: (N, 4) person boxes in image pixels (array, tensor, Boxes, or a list of N rows:
            lists, arrays or tensors of 4) in
            ``box_mode``: XYXY_ABS or XYWH_ABS (relative modes are a ValueError).
        scores: (N,) box scores; None gives 1 to every box.
        image_size: (H, W) of the image.
        image_id: names the image in errors and the warning (None: errors name "image None").

    Returns:
        Instances of ``image_size`` with ``proposal_boxes`` (Boxes (N, 4), float32) and ``scores``
        (N,) float32, on the CPU unless ``boxes`` is a tensor elsewhere.

    Raises:
        ValueError: boxes or scores of the wrong shape, another ``box_mode``, a degenerate box or a
            score that is not finite (each message names the image).
    """
    named = "" if image_id is None else f"image {image_id!r}: "
    try:
        if isinstance(boxes, Boxes):
            boxes = boxes.tensor
        elif isinstance(boxes, (list, tuple)):  # rows as tensors too (torch.as_tensor takes only 1-element ones)
            boxes = [box.tolist() if isinstance(box, Tensor) else box for box in boxes]
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"person boxes must be (N, 4) {box_mode.name}, got shape {tuple(boxes.shape)}")
        if box_mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
            raise ValueError(f"box_mode must be BoxMode.XYXY_ABS or BoxMode.XYWH_ABS (image pixels), got {box_mode!r}")
        scores = boxes.new_ones(len(boxes)) if scores is None else scores
        scores = torch.as_tensor(scores, dtype=torch.float32, device=boxes.device)
    except ValueError as e:
        raise ValueError(f"{named}{e}") from e
    check_boxes(boxes, PrecomputedBoxes.name, image_id, scores, box_mode)  # and the scores' shape
    boxes = BoxMode.convert(boxes, box_mode, BoxMode.XYXY_ABS)
    if len(boxes) and max(image_size) > _NORMALISED_MIN_SIDE and bool((boxes.abs() <= _NORMALISED_MAX_COORD).all()):
        logger.warning(
            f"{named}all {len(boxes)} person boxes have coordinates <= {_NORMALISED_MAX_COORD} on a {image_size[1]}x"
            f"{image_size[0]} image: are they normalised to [0, 1]? Boxes are in image pixels: multiply x by the "
            "width and y by the height"
        )
    proposals = Instances(tuple(image_size))
    proposals.proposal_boxes = Boxes(boxes)
    proposals.scores = scores
    return proposals


class Predictor:
    """Builds DePOTR from a config, loads its weights and estimates the keypoints of every person
    in images.

    An image's person boxes reach the pose model as ``"proposals"`` (box source "precomputed"):

    1. the caller's: ``boxes`` (N, 4) XYXY in image pixels, optional ``scores`` (N,) (default 1);
    2. else the detector's (``self.detector``, ``MODEL.DEPOTR.DETECTOR``, run beside the pose
       model) when its ``CONFIG_FILE`` is set; an image where it finds nobody gives empty Instances;
    3. else the whole image as one person of score 1 (source "whole_image").

    ``MODEL.DEPOTR.TEST_BOX_SOURCE`` (an evaluation setting) is not used. The boxes follow the box
    sources' one policy (``depotr.modeling.box_sources``): malformed boxes are errors; caller and
    detector boxes are filtered by ``BOX_SCORE_THRESH`` / ``BOX_TOPK`` and sorted by decreasing
    score; all are clipped to the image, a box wholly outside it gives no person (warned).

    Images are BGR uint8 (H, W, 3) arrays, as ``cv2.imread`` gives, or file paths; other layouts
    are converted by ``depotr.data.image_io.to_bgr_uint8``. Images are not resized: persons are
    cropped at full resolution. ``INPUT.FORMAT`` ("RGB" or "BGR") is the order the model is fed.
    """

    def __init__(self, cfg: CfgNode, random_weights: bool = False):
        """
        Args:
            cfg: a DePOTR config (``depotr.config.load_depotr_config``; :func:`check_pose_config`);
                ``MODEL.WEIGHTS`` (a path or URL) is loaded with ``DePOTRCheckpointer``, the model
                runs on ``MODEL.DEVICE``.
            random_weights: run with the random initialisation (``MODEL.WEIGHTS`` must be empty;
                ``depotr.engine.checkpoint.weights_to_load``), and the person detector too when
                ``MODEL.DEPOTR.DETECTOR.WEIGHTS`` is empty (otherwise an error).
        """
        check_pose_config(cfg)
        load_weights = weights_to_load(cfg.MODEL.WEIGHTS, random_weights)
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {self.input_format!r}")
        self.detector = (
            build_person_detector(self.cfg, random_weights) if self.cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE else None
        )
        box_source = build_box_source(self.cfg, "precomputed", fallback=build_box_source(self.cfg, "whole_image"))
        model = build_pose_model(self.cfg, training=False, box_source=box_source)  # no training augmentation
        self.model = model.to(torch.device(self.cfg.MODEL.DEVICE)).eval()
        if load_weights:
            DePOTRCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        log_device(self.cfg.MODEL.DEVICE)

    def __call__(
        self,
        image: ImageLike,
        boxes: Optional[BoxesLike] = None,
        scores: Optional[ScoresLike] = None,
        box_mode: BoxMode = BoxMode.XYXY_ABS,
        image_id: Optional[Hashable] = None,
    ) -> Instances:
        """Persons of one image: :meth:`predict_batch` of ``[image]`` (``boxes`` (N, 4), ``scores``
        (N,) or None; ``image_id`` names the image in warnings and errors)."""
        boxes = None if boxes is None else [boxes]
        scores = None if scores is None else [scores]
        return self.predict_batch([image], boxes, scores, box_mode, None if image_id is None else [image_id])[0]

    @torch.no_grad()
    def predict_batch(
        self,
        images: Iterable[ImageLike],
        boxes: Optional[Iterable[Optional[BoxesLike]]] = None,
        scores: Optional[Iterable[Optional[ScoresLike]]] = None,
        box_mode: BoxMode = BoxMode.XYXY_ABS,
        image_ids: Optional[Iterable[Hashable]] = None,
    ) -> List[Instances]:
        """Persons of B images; all persons of all images are cropped together (from the uint8
        images) and go through one forward of the keypoint branch (two with ``TEST.FLIP``).

        ``images``, ``boxes``, ``scores`` and ``image_ids`` may be any iterables (lists, tuples,
        generators, a (B, H, W, 3) array); each is read once.

        Args:
            images: B images, each a (H, W, 3) uint8 BGR array (or another layout
                ``to_bgr_uint8`` converts) or a file path.
            boxes: None, or B entries: (N_b, 4) person boxes of image b in image pixels, or None
                for the detector's boxes or the whole image (class docstring).
            scores: None, or B entries: (N_b,) scores of ``boxes[b]``, or None for 1.
            box_mode: ``BoxMode`` of every entry of ``boxes``: XYXY_ABS (default) or XYWH_ABS.
            image_ids: None, or B names of the images for warnings and errors (e.g. a video's
                frame index); None names each by its path, else by its index in ``images``.

        Returns:
            B Instances (on the CPU) of size (H_b, W_b), each with
                * pred_boxes: Boxes (N, 4), the person boxes clipped to the image;
                * scores: (N,) box score x mean confident keypoint score;
                * pred_keypoints: (N, K, 3) (x, y, score), x, y in continuous image pixels
                  (pixel i covers [i, i + 1));
                * pred_classes: (N,) zeros (person);
                * box_index: (N,) int64, which of ``boxes[b]`` (or of the detector's boxes) each
                  person comes from; the missing ones were below the score threshold, beyond
                  top-k, wholly outside the image or OKS-NMS duplicates.

        Raises:
            FileNotFoundError, ValueError: a missing or unreadable image file, an image array of
                another layout, boxes or scores of the wrong shape, a degenerate box, a NaN or
                infinite score (each message names the image by its id).
            TypeError: ``images`` is one image (a path, or an (H, W, C) array of C = 1, 3 or 4),
                not an iterable of them (an array's rows would be read as images).
        """
        if isinstance(images, (str, os.PathLike)) or (
            isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[2] in (1, 3, 4)
        ):
            what = f"an array of shape {images.shape}" if isinstance(images, np.ndarray) else repr(images)
            raise TypeError(
                f"predict_batch takes an iterable of images, got one image ({what}): "
                "call the predictor itself, predictor(image), or pass [image]"
            )
        images = list(images)
        num = len(images)
        if num == 0:
            return []
        boxes = [None] * num if boxes is None else list(boxes)
        scores = [None] * num if scores is None else list(scores)
        if len(boxes) != num or len(scores) != num:
            raise ValueError(f"got {num} images, {len(boxes)} box entries and {len(scores)} score entries")
        image_ids = [None] * num if image_ids is None else list(image_ids)
        if len(image_ids) != num:
            raise ValueError(f"got {num} images and {len(image_ids)} image ids")
        inputs = [
            self._model_input(image, index, image_id) for index, (image, image_id) in enumerate(zip(images, image_ids))
        ]
        for x, image_boxes, image_scores in zip(inputs, boxes, scores):
            if image_boxes is None and image_scores is not None:
                raise ValueError(f"image {x['image_id']!r} has scores but no boxes")
            if image_boxes is not None:
                x["proposals"] = person_proposals(
                    image_boxes, image_scores, (x["height"], x["width"]), box_mode, x["image_id"]
                )
        undetected = [x for x in inputs if "proposals" not in x]
        if self.detector is not None and undetected:
            for x, proposals in zip(undetected, self.detector(undetected, self.input_format)):
                x["proposals"] = proposals
        return [out["instances"].to("cpu") for out in self.model(inputs)]

    def _model_input(self, image: ImageLike, index: int, image_id: Optional[Hashable] = None) -> dict:
        """A model input ({"image": (3, H, W) uint8 tensor in ``input_format`` on the model's
        device, "height", "width", "image_id": ``image_id``, else the path, else ``index``, the
        image's index in the batch})."""
        if isinstance(image, (str, os.PathLike)):
            image_id, image = os.fspath(image) if image_id is None else image_id, read_image_bgr(image)
        elif isinstance(image, np.ndarray):
            image_id = index if image_id is None else image_id
            try:
                image = to_bgr_uint8(image)
            except ValueError as e:
                raise ValueError(f"image {image_id!r}: {e}") from e
        else:
            raise TypeError(f"image {index} is a {type(image).__name__}; expected a numpy array or a file path")
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), device=self.model.device)
        return {"image": tensor, "height": image.shape[0], "width": image.shape[1], "image_id": image_id}
