"""Where the person boxes of the top-down pipeline come from, and the one policy they obey.

Sources (``MODEL.DEPOTR.TEST_BOX_SOURCE`` at inference, always ``gt`` in training; docs/config.md):
:class:`GtBoxes`, :class:`PrecomputedBoxes` (also ``detector``: a person detector run beside the
pose model, :mod:`depotr.modeling.person_detector`, gives ``"proposals"``), :class:`WholeImageBoxes`.

Every source returns per image a :class:`PersonBoxes` under ONE policy, applied in this order:

1. Malformed boxes are input errors, before any filter: boxes not (N, 4), scores not (N,) or not
   finite, a box not finite or of width or height <= 0 raise a ValueError naming the image id, the
   source and the box index (:func:`check_boxes`; a ``Predictor`` caller's boxes are checked
   first in the caller's ``box_mode``). ``gt`` checks the boxes of the persons it keeps (those
   with ``min_keypoints`` labelled keypoints); the others' boxes are never used.
2. Ranked sources (``precomputed``, hence ``detector``) drop boxes scoring below
   ``MODEL.DEPOTR.BOX_SCORE_THRESH``, sort the rest by decreasing score (stable) and keep the
   ``BOX_TOPK`` first (<= 0: all) (:func:`select_boxes`), counting the drops in ``num_dropped``.
   Score drops are logged (INFO) at most once a minute; top-k drops are a WARNING naming
   ``BOX_TOPK`` and the count, at the first and then at most once a minute. The top-k applies to
   a ``Predictor`` caller's boxes too (they are ``"proposals"``): raise ``BOX_TOPK`` (or set it
   <= 0) to keep more than 100 persons of an image. ``gt`` and ``whole_image`` keep their order.
3. Boxes are clipped to the image (as Detectron2's detectors, and SimpleBaseline / HRNet the
   training boxes). A box with no area inside the image is dropped, with one warning per image.
"""

import logging
import time
from collections import Counter
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from detectron2.config import CfgNode
from detectron2.structures import Boxes, BoxMode
from detectron2.utils.logger import log_every_n_seconds

__all__ = [
    "TRAIN_BOX_SOURCES",
    "TEST_BOX_SOURCES",
    "PersonBoxes",
    "check_boxes",
    "select_boxes",
    "PersonBoxSource",
    "GtBoxes",
    "PrecomputedBoxes",
    "WholeImageBoxes",
    "build_box_source",
]

logger = logging.getLogger(__name__)

# MODEL.DEPOTR.BOX_SOURCE values (training boxes) and MODEL.DEPOTR.TEST_BOX_SOURCE values.
TRAIN_BOX_SOURCES = ("gt",)
TEST_BOX_SOURCES = ("gt", "precomputed", "detector", "whole_image")


class PersonBoxes(NamedTuple):
    """The person boxes of one image, as every :class:`PersonBoxSource` returns them."""

    boxes: Tensor  # (N, 4) float32 XYXY in image pixels
    scores: Tensor  # (N,) float32
    index: Tensor  # (N,) int64, each box's position in its source's list (0 for the whole image)


def check_boxes(
    boxes: Tensor,
    source: str,
    image_id: object,
    scores: Optional[Tensor] = None,
    box_mode: BoxMode = BoxMode.XYXY_ABS,
) -> None:
    """Rule 1 of the module's policy for (N, 4) boxes and their (N,) scores (or None); ``source``
    and ``image_id`` are named in the error. ``box_mode``: the boxes' mode, XYXY_ABS (the sources)
    or XYWH_ABS (a ``Predictor`` caller's, checked before conversion so that the error shows the
    box as given)."""
    mode = {BoxMode.XYXY_ABS: "XYXY", BoxMode.XYWH_ABS: "XYWH"}[box_mode]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{source} person boxes of image {image_id!r} must be (N, 4) {mode}, got shape {tuple(boxes.shape)}"
        )
    if scores is not None:
        if scores.shape != (len(boxes),):
            raise ValueError(
                f"image {image_id!r}: box scores must be ({len(boxes)},) for {len(boxes)} boxes, "
                f"got shape {tuple(scores.shape)} ({source} boxes)"
            )
        bad = torch.nonzero(~torch.isfinite(scores)).flatten().tolist()
        if bad:
            raise ValueError(
                f"image {image_id!r}: box scores must be finite; box {bad[0]} has score {float(scores[bad[0]])} "
                f"({source} boxes; {len(bad)} of {len(boxes)} scores are not finite)"
            )
    sizes = boxes[:, 2:] if box_mode == BoxMode.XYWH_ABS else boxes[:, 2:] - boxes[:, :2]
    bad = ~(torch.isfinite(boxes).all(dim=1) & (sizes > 0).all(dim=1))
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        hint = "; if it is XYWH, pass box_mode=BoxMode.XYWH_ABS" if box_mode == BoxMode.XYXY_ABS else ""
        raise ValueError(
            f"{source} person box {index} of image {image_id!r} is degenerate: "
            f"{boxes[index].tolist()} ({mode}; width and height must be finite and > 0{hint}); "
            f"{int(bad.sum())} of {len(boxes)} boxes of this image are degenerate"
        )


def select_boxes(
    boxes: Tensor, scores: Tensor, score_thresh: float, topk: int, return_index: bool = False
) -> Union[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor, Tensor]]:
    """Rule 2 of the module's policy: keeps the (N, 4) boxes with (N,) scores >= ``score_thresh``,
    then the ``topk`` (<= 0: all) highest scoring. Returns (M, 4) boxes and (M,) scores sorted by
    decreasing score (stable), with ``return_index`` also their (M,) int64 indices into ``boxes``."""
    index = torch.nonzero(scores >= score_thresh).flatten()
    order = index[torch.argsort(scores[index], descending=True, stable=True)]
    if topk > 0:
        order = order[:topk]
    return (boxes[order], scores[order], order) if return_index else (boxes[order], scores[order])


class PersonBoxSource:
    """Base class of the box sources: ``source(batched_inputs) -> List[PersonBoxes]``, one per
    input, under the module's policy. Subclasses set ``name`` and implement :meth:`image_boxes`.
    Sources hold no weights (nothing in the model's state dict)."""

    name = ""

    def __init__(self, score_thresh: Optional[float] = None, topk: int = 0, clip: bool = True):
        """score_thresh, topk: rule 2's ``MODEL.DEPOTR.BOX_SCORE_THRESH`` (None: the source is not
        ranked) and ``BOX_TOPK`` (<= 0: no limit). clip: rule 3's clipping (boxes with no area
        inside the image are dropped either way)."""
        self.score_thresh = None if score_thresh is None else float(score_thresh)
        self.topk = int(topk)
        self.clip = bool(clip)
        # Boxes dropped by rule 2 since construction: "score" (below the threshold), "topk".
        self.num_dropped: Counter = Counter()
        self._topk_warned_at: Optional[float] = None  # time.monotonic() of the last top-k warning

    def image_boxes(self, x: Dict[str, Any]) -> PersonBoxes:
        """The boxes of one input as the source has them, before the policy."""
        raise NotImplementedError

    def _warn_topk(self, image_id: object, above: int, dropped: int) -> None:
        """Rule 2's top-k warning: at the first top-k drop, then at most once a minute."""
        now = time.monotonic()
        if self._topk_warned_at is not None and now - self._topk_warned_at < 60:
            return
        self._topk_warned_at = now
        logger.warning(
            f"Image {image_id!r}: MODEL.DEPOTR.BOX_TOPK {self.topk} dropped {dropped} of its {above} {self.name} "
            f"person boxes scoring >= {self.score_thresh:g} (the lowest scoring; {self.num_dropped['topk']} "
            "dropped by the top-k so far); raise BOX_TOPK (<= 0: no limit) to keep them"
        )

    def __call__(self, batched_inputs: List[Dict[str, Any]]) -> List[PersonBoxes]:
        """Per input the checked, filtered, sorted (ranked sources) and clipped boxes."""
        return [self._apply_policy(x, self.image_boxes(x)) for x in batched_inputs]

    def _apply_policy(self, x: Dict[str, Any], raw: PersonBoxes) -> PersonBoxes:
        image_id = x.get("image_id")
        boxes, scores, index = raw
        check_boxes(boxes, self.name, image_id, scores)
        if self.score_thresh is not None:
            num = len(boxes)
            above = int((scores >= self.score_thresh).sum())
            boxes, scores, order = select_boxes(boxes, scores, self.score_thresh, self.topk, return_index=True)
            index = index[order]
            if len(boxes) < num:
                self.num_dropped.update(score=num - above, topk=above - len(boxes))
                log_every_n_seconds(
                    logging.INFO,
                    f"{self.name} person boxes dropped so far: {self.num_dropped['score']} scoring below "
                    f"{self.score_thresh:g}, {self.num_dropped['topk']} beyond the top {self.topk} of an image",
                    n=60,
                    name=__name__,
                )
            if len(boxes) < above:
                self._warn_topk(image_id, above, above - len(boxes))
        boxes, scores = boxes.float(), scores.float()
        height, width = x["image"].shape[-2:]
        clipped = Boxes(boxes.clone())
        clipped.clip((height, width))
        inside = clipped.nonempty()
        if not bool(inside.all()):
            logger.warning(
                f"Image {image_id!r}: dropped {self.name} person boxes {boxes[~inside].tolist()} (indices "
                f"{index[~inside].tolist()}), {int((~inside).sum())} of {len(boxes)}, which lie outside the "
                f"image (H x W {height} x {width})"
            )
        if self.clip:
            boxes = clipped.tensor
        return PersonBoxes(boxes[inside], scores[inside], index[inside])


class GtBoxes(PersonBoxSource):
    """``gt``: the annotated boxes of ``batched_input["instances"]``, scores 1, in their order;
    without the persons with fewer than ``min_keypoints`` labelled (v > 0) ``gt_keypoints``."""

    name = "gt"

    def __init__(self, min_keypoints: int = 0, clip: bool = True):
        super().__init__(clip=clip)
        self.min_keypoints = int(min_keypoints)

    def image_boxes(self, x: Dict[str, Any]) -> PersonBoxes:
        if "instances" not in x:
            raise KeyError(
                f"image {x.get('image_id')!r} has no 'instances': box source 'gt' needs "
                "the ground-truth Instances (gt_boxes) the data mapper adds"
            )
        instances = x["instances"]
        boxes = instances.gt_boxes.tensor
        index = torch.arange(len(boxes), device=boxes.device)
        if self.min_keypoints > 0:
            if not instances.has("gt_keypoints"):
                raise KeyError(f"image {x.get('image_id')!r} has instances without gt_keypoints")
            labelled = (instances.gt_keypoints.tensor[..., 2] > 0).sum(dim=1) >= self.min_keypoints
            index = index[labelled.to(boxes.device)]
        return PersonBoxes(boxes[index], boxes.new_ones(len(index)), index)


class PrecomputedBoxes(PersonBoxSource):
    """``precomputed``: ``batched_input["proposals"]`` (Instances with ``proposal_boxes`` (Boxes
    (N, 4) XYXY image pixels) and ``scores`` (N,)), ranked. An input without ``"proposals"`` takes
    the ``fallback`` source's boxes (the ``Predictor``'s whole image); without a fallback it is a
    KeyError naming the image.
    """

    name = "precomputed"

    def __init__(self, score_thresh: float = 0.0, topk: int = 100, fallback: Optional[PersonBoxSource] = None):
        super().__init__(score_thresh, topk)
        self.fallback = fallback

    def image_boxes(self, x: Dict[str, Any]) -> PersonBoxes:
        if "proposals" not in x:
            raise KeyError(
                f"image {x.get('image_id')!r} has no 'proposals': box source 'precomputed' "
                "expects batched_input['proposals'] = Instances(proposal_boxes=Boxes (N, 4) XYXY in "
                "image pixels, scores=(N,)). Load person detections with DATASETS.PRECOMPUTED_BOXES, "
                "run the model inside depotr.modeling.person_detector.PoseWithDetector (TEST_BOX_SOURCE "
                "'detector': Trainer.test does), or use MODEL.DEPOTR.TEST_BOX_SOURCE 'gt' / 'whole_image'"
            )
        boxes = x["proposals"].proposal_boxes.tensor
        return PersonBoxes(boxes, x["proposals"].scores, torch.arange(len(boxes), device=boxes.device))

    def __call__(self, batched_inputs: List[Dict[str, Any]]) -> List[PersonBoxes]:
        if self.fallback is None:
            return super().__call__(batched_inputs)
        rest = [x for x in batched_inputs if "proposals" not in x]
        fallen_back = iter(self.fallback(rest) if rest else ())
        return [
            self._apply_policy(x, self.image_boxes(x)) if "proposals" in x else next(fallen_back)
            for x in batched_inputs
        ]


class WholeImageBoxes(PersonBoxSource):
    """``whole_image``: one person per image, the box [0, 0, W, H] of score 1."""

    name = "whole_image"

    def image_boxes(self, x: Dict[str, Any]) -> PersonBoxes:
        height, width = x["image"].shape[-2:]
        device = x["image"].device
        boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]], device=device)
        return PersonBoxes(boxes, boxes.new_ones(1), torch.zeros(1, dtype=torch.int64, device=device))


def build_box_source(cfg: CfgNode, name: str, fallback: Optional[PersonBoxSource] = None) -> PersonBoxSource:
    """The box source ``name`` (one of :data:`TEST_BOX_SOURCES`; "detector" gives "precomputed")
    with ``MODEL.DEPOTR.BOX_SCORE_THRESH`` / ``BOX_TOPK`` for the ranked sources. ``fallback``: for
    "precomputed" only, the source of the inputs without ``"proposals"``."""
    depotr = cfg.MODEL.DEPOTR
    if fallback is not None and name != "precomputed":
        raise ValueError(f"only the 'precomputed' box source takes a fallback, not {name!r}")
    if name == "gt":
        return GtBoxes()
    if name in ("precomputed", "detector"):
        return PrecomputedBoxes(depotr.BOX_SCORE_THRESH, depotr.BOX_TOPK, fallback=fallback)
    if name == "whole_image":
        return WholeImageBoxes()
    raise ValueError(
        f"unknown person box source {name!r} (MODEL.DEPOTR.TEST_BOX_SOURCE); expected one of {TEST_BOX_SOURCES}"
    )
