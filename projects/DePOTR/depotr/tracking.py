"""Poses in video: persistent person identities (tracking) and One-Euro smoothing of keypoints
(the settings, the edge rule and how they were chosen: docs/config.md, "Video").

Shape letters: N persons of a frame, T tracks, K keypoints.

Tracking (SimpleBaseline's pose tracker, Xiao et al. 2018, with Hungarian matching; constant-velocity
motion as SORT's, Bewley et al. 2016): a frame's persons are matched to the tracks alive before it
by ``IOU_WEIGHT x box IoU + (1 - IOU_WEIGHT) x OKS``, never below ``MIN_SIMILARITY``, each track's
box and pose first moved to the frame at its velocity (box clipped to the frame). OKS is taken with
the track's last pose, the mean of the two box areas as the scale, every keypoint counted. Where a
person's box and a track's box (as predicted and as last seen) touch the same edge of the frame,
the box term is the larger of their IoU and the share of either box inside the other. A match sets
the track's box and corrects its velocity by ``VELOCITY_GAIN`` x (detected - predicted box centre)
/ frames since the last match. An unmatched person starts a track; an unmatched track is kept
``MAX_LOST_FRAMES`` frames, then ended. Ids count up from 0 and are never reused.

Smoothing (Casiez, Roussel & Vogel, CHI 2012, "1 Euro Filter"): every x and y of every keypoint
of a track is low-pass filtered at ``(MIN_CUTOFF + BETA x |speed|) x (score / SCORE_REF) ^
SCORE_POWER`` Hz (speed in pixels/s, filtered at ``D_CUTOFF``; score clipped to [0.05, 1]). Each
track has its own filter; the time step is the frames since the track's last pose / frame rate.
"""

import logging
import math
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from detectron2.config import CfgNode
from detectron2.structures import Boxes, BoxMode, Instances, pairwise_ioa, pairwise_iou

from .cli import ConfigError
from .data.image_io import read_image_bgr
from .data.keypoint_metadata import keypoint_metadata_from_config
from .modeling.oks import keypoint_similarity
from .predictor import BoxesLike, ImageLike, Predictor, ScoresLike

__all__ = ["OneEuroFilter", "PoseTracker", "VideoPoseTracker", "track_video", "tracking_config"]

logger = logging.getLogger(__name__)

# A box side within this many pixels of the frame's edge touches it (detector boxes are clipped
# to the frame, and a person cut by the edge ends there).
EDGE_MARGIN = 2.0


def _smoothing_factor(cutoff: np.ndarray, dt: float) -> np.ndarray:
    """alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff): the exponential smoothing factor of a
    first-order low-pass filter of cutoff frequency ``cutoff`` (Hz) sampled every ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The 1 Euro filter of an array of independent signals (e.g. (K, 2) keypoint coordinates)."""

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float):
        """
        Args:
            min_cutoff: cutoff frequency (Hz) at speed 0; lower smooths more.
            beta: cutoff increase per unit of speed (Hz per unit/s); higher lags less.
            d_cutoff: cutoff frequency (Hz) of the speed estimate.
        """
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(
                f"One-Euro filter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}"
            )
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: Optional[np.ndarray] = None  # last filtered value
        self.speed: Optional[np.ndarray] = None  # last filtered speed (units/s)

    def __call__(self, x: np.ndarray, dt: float, cutoff_scale: Optional[np.ndarray] = None) -> np.ndarray:
        """Filters the next sample ``x`` (any shape, fixed across calls), taken ``dt`` > 0
        seconds after the previous one; ``cutoff_scale`` (> 0, broadcast against ``x``) multiplies
        this sample's cutoff. The first call returns ``x`` (``dt`` and ``cutoff_scale`` unused).
        A missing element (NaN) is NaN in the result and leaves its filter as it was; an element
        seen for the first time starts at its value."""
        x = np.asarray(x, dtype=np.float64)
        if self.value is None:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            return self.value.copy()
        if dt <= 0:
            raise ValueError(f"One-Euro filter time step must be > 0, got {dt}")
        if cutoff_scale is not None and not np.all(np.asarray(cutoff_scale) > 0):
            raise ValueError(f"One-Euro filter cutoff scale must be > 0, got {cutoff_scale}")
        seen, started = np.isfinite(x), np.isfinite(self.value)
        with np.errstate(invalid="ignore"):
            a_d = _smoothing_factor(np.asarray(self.d_cutoff), dt)
            speed = a_d * (x - self.value) / dt + (1.0 - a_d) * self.speed
            cutoff = self.min_cutoff + self.beta * np.abs(speed)
            a = _smoothing_factor(cutoff if cutoff_scale is None else cutoff * cutoff_scale, dt)
            value = a * x + (1.0 - a) * self.value
        self.speed = np.where(seen & started, speed, np.where(seen, 0.0, self.speed))
        self.value = np.where(seen & started, value, np.where(seen, x, self.value))
        return np.where(seen, self.value, np.nan)


@dataclass
class _Track:
    track_id: int
    box: torch.Tensor  # (4,) XYXY of the last pose
    keypoints: torch.Tensor  # (K, 3) last raw pose
    last_frame: int
    smoother: Optional[OneEuroFilter]
    velocity: torch.Tensor  # (2,) x, y displacement of the box centre per frame

    def predicted(self, frame: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The (4,) XYXY box and (K, 2) keypoints moved to ``frame`` at the track's velocity."""
        shift = self.velocity * (frame - self.last_frame)
        return self.box + shift.repeat(2), self.keypoints[:, :2] + shift


def _edge_overlap(track_boxes: Boxes, boxes: Boxes, image_size: Tuple[int, int]) -> torch.Tensor:
    """(T, N): where a track's box and a person's box touch the same edge of the frame, the share
    of either inside the other (the larger); else 0."""
    same_edge = (_edges(track_boxes, image_size)[:, None] & _edges(boxes, image_size)).any(-1)
    share = torch.maximum(pairwise_ioa(track_boxes, boxes), pairwise_ioa(boxes, track_boxes).T)
    return torch.where(same_edge, share, torch.zeros_like(share))


def _edges(boxes: Boxes, image_size: Tuple[int, int]) -> torch.Tensor:
    """(N, 4) bool: whether each box touches the frame's left, top, right, bottom edge."""
    x0, y0, x1, y1 = boxes.tensor.unbind(-1)
    height, width = image_size
    return torch.stack(
        [x0 <= EDGE_MARGIN, y0 <= EDGE_MARGIN, x1 >= width - EDGE_MARGIN, y1 >= height - EDGE_MARGIN], -1
    )


def _check_fps(fps: float) -> None:
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be finite and > 0, got {fps}")


def tracking_config(cfg: CfgNode) -> CfgNode:
    """A copy of ``cfg`` for a :class:`depotr.Predictor` whose persons are tracked:
    ``TEST.OKS_NMS_THRESH`` set to ``TEST.TRACK.OKS_NMS_THRESH`` (default 1.0, off). OKS-NMS
    drops one of two overlapping persons whose predicted poses coincide, so crossing persons'
    tracks break (benchmarks/README.md, video)."""
    out = cfg.clone()
    out.defrost()
    out.TEST.OKS_NMS_THRESH = cfg.TEST.TRACK.OKS_NMS_THRESH
    if cfg.is_frozen():
        out.freeze()
    return out


class PoseTracker:
    """Gives the persons of consecutive frames persistent ids and, optionally, smooths their
    keypoints (module docstring). Feed the frames in order to :meth:`update`."""

    def __init__(
        self,
        sigmas: Sequence[float],
        iou_weight: float = 0.5,
        min_similarity: float = 0.3,
        max_lost_frames: int = 10,
        velocity_gain: float = 0.1,
        fps: float = 30.0,
        smoothing: Optional[Sequence[float]] = None,
        score_ref: float = 0.5,
        score_power: float = 2.0,
    ):
        """
        Args:
            sigmas: (K,) OKS sigmas of the keypoints.
            iou_weight: weight of the box IoU in the similarity, in [0, 1]; OKS gets the rest.
            min_similarity: pairs less similar than this are never matched, in [0, 1].
            max_lost_frames: frames a track is kept without a match (0: ended at once).
            velocity_gain: gain of the velocity's correction at a match, in [0, 1]; 0: no motion.
            fps: frame rate, for the smoothing time step.
            smoothing: None (off) or (min_cutoff, beta, d_cutoff) of :class:`OneEuroFilter`.
            score_ref, score_power: each keypoint's cutoff is scaled by
                ``(score / score_ref) ^ score_power`` (score_ref > 0, score_power >= 0; 0: not).
        """
        if not all(0.0 <= value <= 1.0 for value in (iou_weight, min_similarity, velocity_gain)):
            raise ValueError(
                "iou_weight, min_similarity and velocity_gain must be in [0, 1], "
                f"got {iou_weight}, {min_similarity} and {velocity_gain}"
            )
        if max_lost_frames < 0:
            raise ValueError(f"max_lost_frames must be >= 0, got {max_lost_frames}")
        _check_fps(fps)
        if smoothing is not None:
            OneEuroFilter(*smoothing)  # checks the parameters now, not at the first track
        if score_ref <= 0 or score_power < 0:
            raise ValueError(f"score_ref must be > 0 and score_power >= 0, got {score_ref} and {score_power}")
        self.score_ref, self.score_power = score_ref, score_power
        self.sigmas = tuple(float(s) for s in sigmas)
        self.iou_weight, self.min_similarity, self.max_lost_frames = iou_weight, min_similarity, max_lost_frames
        self.velocity_gain, self.fps, self.smoothing = velocity_gain, fps, smoothing
        self.tracks: List[_Track] = []
        self.frame, self.next_id = -1, 0

    @classmethod
    def from_config(cls, cfg: CfgNode, fps: float = 30.0, smooth: bool = False) -> "PoseTracker":
        """The tracker of ``TEST.TRACK`` (and with ``smooth``, ``TEST.SMOOTH``), with the OKS
        sigmas of the config's keypoints. Warns when the config's OKS-NMS is on (it breaks tracks)."""
        thresh = cfg.TEST.OKS_NMS_THRESH
        if thresh < 1.0:
            # the same as TEST.TRACK's: set there (the demo's --track builds the Predictor from tracking_config)
            remedy = (
                "set TEST.TRACK.OKS_NMS_THRESH 1.0 (the default: off)"
                if thresh == cfg.TEST.TRACK.OKS_NMS_THRESH
                else "build the Predictor from depotr.tracking.tracking_config(cfg) (TEST.TRACK.OKS_NMS_THRESH, "
                "default 1.0: off)"
            )
            logger.warning(
                "OKS-NMS is on (TEST.OKS_NMS_THRESH %g): it removes one of two overlapping persons whose "
                "predicted poses coincide, and their tracks break (benchmarks/README.md, video); %s",
                thresh,
                remedy,
            )
        _check_fps(fps)  # the caller's, not the config's
        t, s = cfg.TEST.TRACK, cfg.TEST.SMOOTH
        try:
            return cls(
                keypoint_metadata_from_config(cfg).oks_sigmas,
                iou_weight=t.IOU_WEIGHT,
                min_similarity=t.MIN_SIMILARITY,
                max_lost_frames=t.MAX_LOST_FRAMES,
                velocity_gain=t.VELOCITY_GAIN,
                fps=fps,
                smoothing=(s.MIN_CUTOFF, s.BETA, s.D_CUTOFF) if smooth else None,
                score_ref=s.SCORE_REF,
                score_power=s.SCORE_POWER,
            )
        except ValueError as e:  # a config mistake: one line "error: ..." in the demo, not a traceback
            raise ConfigError(f"TEST.TRACK / TEST.SMOOTH: {e} (the names are the keys in lower case)") from None

    def similarity(self, instances: Instances) -> torch.Tensor:
        """(T, N) similarity of the tracks alive now, moved to this frame, and the persons of
        ``instances``."""
        if not self.tracks or len(instances) == 0:
            return torch.zeros(len(self.tracks), len(instances))
        track_boxes, track_xy = (torch.stack(x) for x in zip(*(t.predicted(self.frame) for t in self.tracks)))
        track_boxes, last_boxes = Boxes(track_boxes), Boxes(torch.stack([t.box for t in self.tracks]))
        track_boxes.clip(instances.image_size)
        last_boxes.clip(instances.image_size)
        boxes, size = instances.pred_boxes.to("cpu"), instances.image_size
        edge = torch.maximum(_edge_overlap(track_boxes, boxes, size), _edge_overlap(last_boxes, boxes, size))
        iou = torch.maximum(pairwise_iou(track_boxes, boxes), edge)
        xy = instances.pred_keypoints.to("cpu")[:, :, :2].float()
        oks = keypoint_similarity(
            track_xy[:, None], xy[None], boxes.area()[None], self.sigmas, "mean", track_boxes.area()[:, None]
        )
        oks = oks.nan_to_num(nan=0.0).mean(-1)  # a keypoint missing (NaN) in either pose: no match
        return self.iou_weight * iou + (1.0 - self.iou_weight) * oks

    def skip_frame(self) -> None:
        """Counts a frame that gives no persons (e.g. one skipped as unreadable): the tracks age by
        a frame, and those lost for over ``max_lost_frames`` end."""
        self.frame += 1
        self._end_lost_tracks()

    def _end_lost_tracks(self) -> None:
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame <= self.max_lost_frames]

    def update(self, instances: Instances) -> Instances:
        """Tracks the persons of the next frame.

        Args:
            instances: the frame's persons, with ``pred_boxes`` (N, 4) XYXY and
                ``pred_keypoints`` (N, K, 3) in image pixels (as ``depotr.Predictor`` gives).

        Returns:
            A copy of ``instances`` (not modified; ``pred_keypoints`` a new tensor) with
            ``track_id`` (N,) int64 (on the device of ``pred_keypoints``) and, when smoothing, the
            smoothed x, y in ``pred_keypoints`` (scores unchanged).
        """
        self.frame += 1
        out = Instances(instances.image_size, **instances.get_fields())
        keypoints = instances.pred_keypoints.detach().to("cpu").float().clone()
        track_of = [-1] * len(instances)
        boxes = instances.pred_boxes.tensor.detach().to("cpu").float()
        similarity = self.similarity(instances)
        if similarity.numel():
            rows, cols = linear_sum_assignment(similarity.numpy(), maximize=True)
            for row, col in zip(rows, cols):
                if similarity[row, col] >= self.min_similarity:
                    track_of[col] = row
        track_ids = []
        for n, row in enumerate(track_of):
            if row < 0:
                smoother = OneEuroFilter(*self.smoothing) if self.smoothing is not None else None
                track = _Track(self.next_id, boxes[n], keypoints[n], self.frame, smoother, torch.zeros(2))
                self.next_id += 1
                self.tracks.append(track)
            else:
                track = self.tracks[row]
                gap = self.frame - track.last_frame
                residual = boxes[n] - track.predicted(self.frame)[0]
                track.velocity = track.velocity + self.velocity_gain * (residual[:2] + residual[2:]) / (2 * gap)
            dt = (self.frame - track.last_frame) / self.fps
            track.box, track.keypoints, track.last_frame = boxes[n], keypoints[n].clone(), self.frame
            if track.smoother is not None:
                # (K, 1), the score clipped to [0.05, 1] (a NaN as 0): an unsure keypoint still follows
                score = np.clip(np.nan_to_num(keypoints[n, :, 2:].numpy(), nan=0.0), 0.05, 1.0)
                scale = (score / self.score_ref) ** self.score_power
                smoothed = track.smoother(keypoints[n, :, :2].numpy(), dt, scale)
                keypoints[n, :, :2] = torch.as_tensor(smoothed, dtype=keypoints.dtype)
            track_ids.append(track.track_id)
        self._end_lost_tracks()
        out.track_id = torch.tensor(track_ids, dtype=torch.int64, device=instances.pred_keypoints.device)
        # a new tensor even unsmoothed: a caller's in-place edit of the result (Detectron2's
        # instances_to_coco_json shifts keypoints by -0.5) must not reach ``instances``
        out.pred_keypoints = keypoints.to(instances.pred_keypoints.device, instances.pred_keypoints.dtype)
        return out


class VideoPoseTracker:
    """A :class:`depotr.Predictor` for a frame sequence: each call predicts the persons of the
    next frame and tracks (and with ``smooth``, smooths) them. Every frame must have the size of
    the first (a ValueError names the frame otherwise) and a frame file must be readable (the
    error of ``read_image_bgr``); such a frame still counts, as one without persons, so the tracks
    age as in the demo. Build the predictor from :func:`tracking_config` (OKS-NMS off)."""

    def __init__(self, predictor: Predictor, fps: float = 30.0, smooth: bool = False):
        """
        Args:
            predictor: its config gives ``TEST.TRACK`` and ``TEST.SMOOTH``.
            fps: the frames' rate (e.g. ``cv2.CAP_PROP_FPS``): the smoothing's time step is 1 / fps.
            smooth: One-Euro smoothing of the keypoints (``TEST.SMOOTH``).
        """
        self.predictor = predictor
        self.tracker = PoseTracker.from_config(predictor.cfg, fps=fps, smooth=smooth)
        self.frame_size: Optional[Tuple[int, int]] = None

    def __call__(
        self,
        frame: ImageLike,
        boxes: Optional[BoxesLike] = None,
        scores: Optional[ScoresLike] = None,
        box_mode: BoxMode = BoxMode.XYXY_ABS,
    ) -> Instances:
        """The persons of the next frame (``Predictor.__call__``'s arguments and fields, the frame
        named by its index in messages) with ``track_id`` (N,) int64."""
        if isinstance(frame, (str, os.PathLike)):
            try:
                frame = read_image_bgr(frame)
            except (OSError, ValueError):
                self.tracker.skip_frame()  # a caller skipping the frame still has it counted, as the demo's
                raise
        instances = self.predictor(frame, boxes, scores, box_mode, image_id=self.tracker.frame + 1)
        if self.frame_size is None:
            self.frame_size = instances.image_size
        elif instances.image_size != self.frame_size:
            self.tracker.skip_frame()  # a caller skipping the frame still has it counted, as the demo's
            raise ValueError(
                f"frame {self.tracker.frame} is {instances.image_size[0]}x{instances.image_size[1]} (HxW), "
                f"the first frame {self.frame_size[0]}x{self.frame_size[1]}: a video's frames keep one size"
            )
        return self.tracker.update(instances)


def track_video(
    predictor: Predictor, frames: Iterable[ImageLike], fps: float = 30.0, smooth: bool = False
) -> List[Instances]:
    """The tracked persons of every frame of ``frames`` (in order), one Instances per frame with
    ``track_id``; boxes from the predictor's detector or the whole frame (use
    :class:`VideoPoseTracker` to pass boxes per frame). ``fps`` and ``smooth``: as
    :class:`VideoPoseTracker`'s."""
    video = VideoPoseTracker(predictor, fps=fps, smooth=smooth)
    return [video(frame) for frame in frames]
