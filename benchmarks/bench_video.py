#!/usr/bin/env python
# Video benchmark of depotr.tracking: identities (ID switches, a MOTA-style figure), jitter and
# keypoint AP raw vs One-Euro smoothed, frames/s, on clips of the project's synthetic persons.
"""Renders synthetic clips, runs a trained model on noisy per-frame person boxes, tracks and
smooths the poses, and reports how well identities and keypoints hold over time.

Clips: ``--clips`` clips of ``--frames`` frames (S x S, ``--image-size``), each with 2-4 of the
synthetic generator's figures (``depotr.data.synthetic``: body, colours and drawing) walking
across a fixed background with a gait (legs and arms swinging in opposition), in both directions,
so that they cross; the smaller (farther) figures are drawn first and are occluded by the nearer
ones. Every figure is one ground-truth track; its keypoints and visibility follow the
generator's COCO rules (v = 0 outside the image or turned away, 1 covered, 2 visible).

Boxes, imitating a person detector: each ground-truth box (the figure's pixels) with every side
moved by N(0, ``--box-jitter`` x box size), missed with probability ``--miss-rate``, score
U(0.6, 1); plus false positives (a box of person size at random, score U(0.3, 0.7)) in a frame
with probability ``--fp-rate``.

Model: ``depotr.Predictor`` of ``depotr.tracking.tracking_config(cfg)`` (OKS-NMS as
``TEST.TRACK.OKS_NMS_THRESH`` says, off by default) on those boxes, frame by frame (frames/s: this prediction only,
tracking excluded); persons scoring below ``--min-score`` are dropped, the rest tracked by
``depotr.tracking.PoseTracker`` (``TEST.TRACK``) and, for the smoothed figures, also smoothed
(``TEST.SMOOTH``) at ``--fps``. ``--oracle-noise PX`` replaces the model by the ground-truth
keypoints of each box's person plus N(0, PX) px noise (random keypoints for a false positive): the
tracking and smoothing alone, without a checkpoint (frames/s then means nothing).

Metrics (predictions matched to the ground truth per frame by Hungarian matching on box IoU >= 0.5):
* ID switches (CLEAR MOT): a ground-truth track matched to another predicted id than at its last
  match; MOTA = 1 - (misses + false positives + ID switches) / ground-truth boxes;
* jitter: mean keypoint acceleration |p(t+1) - 2 p(t) + p(t-1)| in px/frame^2 over the predicted
  tracks' keypoints in three consecutive frames, scoring >= ``MODEL.DEPOTR.KEYPOINT_SCORE_THRESH``
  in all three, raw and smoothed (the ground truth's own, labelled keypoints, walking motion
  included, is printed as the floor);
* keypoint AP (pycocotools COCOeval, COCO sigmas) over every frame of every clip, raw and smoothed.

    python benchmarks/bench_video.py                      # the main job's model, 8 clips x 60 frames
    python benchmarks/bench_video.py --config-file configs/depotr_hm_r50.yaml --random-weights  # speed only
    python benchmarks/bench_video.py --oracle-noise 2                # tracking and smoothing alone
    python benchmarks/bench_video.py --random-weights --clips 2 --frames 8 --image-size 128  # smoke run

The last line is ``video: idsw <n> of <tracks> tracks, jitter raw <x> smoothed <y>, AP raw <a> smoothed <b>``.
"""

import argparse
import copy
import math
import os
import sys
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances, pairwise_iou

from depotr import Predictor
from depotr.config import load_depotr_config
from depotr.data import synthetic
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_OKS_SIGMAS
from depotr.evaluation.error_analysis import build_coco, evaluate_keypoints
from depotr.tracking import PoseTracker, tracking_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "depotr_hm_r18_synthetic.yaml")
DEFAULT_WEIGHTS = os.path.join(REPO, "output", "depotr_hm_r18_synthetic", "model_final.pth")
K = len(COCO_PERSON_KEYPOINT_NAMES)
# Gait: hip swing amplitude (degrees) and strides per second.
SWING_DEG, STRIDE_HZ = 25.0, 0.9


def walking_pose(base: Dict[str, float], phase: float) -> Dict[str, float]:
    """``base`` joint angles (radians) with the legs and arms swung for gait ``phase`` (radians),
    as the generator's "walk" poses (swing leg forward, the arm on its side back)."""
    pose = dict(base)
    swing = SWING_DEG * math.sin(phase)
    for side, sign in (("left", 1.0), ("right", -1.0)):
        mean = {j: synthetic.EVERYDAY_POSE_DEG[j][0] for j in ("hip_flex", "knee_flex", "shoulder_flex")}
        pose[f"{side}_hip_flex"] = math.radians(mean["hip_flex"] + sign * swing)
        pose[f"{side}_knee_flex"] = math.radians(mean["knee_flex"] + 1.2 * max(sign * swing, 0.0))
        pose[f"{side}_shoulder_flex"] = math.radians(mean["shoulder_flex"] - 0.8 * sign * swing)
    return pose


class Walker:
    """One figure of a clip: body and colours fixed, walking at ``speed`` px/frame."""

    def __init__(self, rng: np.random.Generator, size: int, frames: int, direction: float, colour_seed: Sequence[int]):
        self.shape, self.base_pose = synthetic._sample_shape(rng), synthetic._sample_pose(rng)
        self.stature = float(rng.uniform(0.45, 0.75)) * size
        self.yaw = direction * float(rng.uniform(60.0, 100.0))  # walking sideways, its face toward its way
        self.speed = direction * float(rng.uniform(0.8, 2.0)) * size / 128
        self.y = float(rng.uniform(0.45, 0.6)) * size
        # crosses the middle at a random time in the middle half of the clip
        self.x0 = size / 2 - self.speed * frames * float(rng.uniform(0.25, 0.75))
        self.phase0 = float(rng.uniform(0, 2 * math.pi))
        self.colour_seed = list(colour_seed)

    def person(self, t: int, fps: float) -> "synthetic._Person":
        """The posed figure at frame ``t``, its pelvis at its place in the image."""
        pose = walking_pose(self.base_pose, self.phase0 + 2 * math.pi * STRIDE_HZ * t / fps)
        points, r_head = synthetic._pose_body(self.shape, pose)
        cam = synthetic._ry(math.radians(self.yaw))
        names = list(points)
        xyz = np.stack([points[n] for n in names]) @ cam.T
        origin = np.array([self.x0 + self.speed * t, self.y])
        xy = np.stack([xyz[:, 0], -xyz[:, 1]], 1) * self.stature + origin
        return synthetic._Person(
            points2d=dict(zip(names, xy)),
            depth=dict(zip(names, xyz[:, 2].tolist())),
            head_center=xyz[names.index("head_center")],
            head_rot=cam @ r_head,
            scale=self.stature,
            origin=origin,
            shape=self.shape,
            yaw=self.yaw,
            roll=0.0,
        )


def render_clip(seed: int, clip: int, frames: int, size: int, fps: float) -> Tuple[List[np.ndarray], List[List[Dict]]]:
    """Frames (S, S, 3) uint8 BGR and per frame the ground-truth persons ({track, bbox XYWH,
    area, keypoints 3K (COCO pixel-index convention), num_keypoints})."""
    rng = np.random.default_rng([seed, clip])
    background = synthetic._background(rng, size)
    count = int(rng.integers(2, 5))
    directions = [1.0 if i % 2 == 0 else -1.0 for i in range(count)]
    walkers = sorted(
        (Walker(rng, size, frames, d, [seed, clip, 1000 + i]) for i, d in enumerate(directions)),
        key=lambda w: w.stature,  # far (small) to near (large): drawing order
    )
    images, truth = [], []
    for t in range(frames):
        img = background.copy()
        labels = np.zeros((size, size), np.uint8)
        persons, layers = [], []
        for i, walker in enumerate(walkers):
            person = walker.person(t, fps)
            layer = synthetic._render_person(img, person, np.random.default_rng(walker.colour_seed))
            labels = np.where(layer > 0, layer + i * synthetic._PARTS_PER_PERSON, labels).astype(np.uint8)
            persons.append(person)
            layers.append(layer)
        noise = synthetic._sensor_noise(rng, size) * 3.0
        images.append(np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8))
        truth.append([p for i in range(count) if (p := _annotation(i, persons[i], layers[i], labels, size))])
    return images, truth


def _annotation(i: int, person, layer: np.ndarray, labels: np.ndarray, size: int) -> Optional[Dict]:
    """Ground truth of figure ``i`` (None when fewer than 50 of its pixels are in the frame)."""
    mask = layer > 0
    if mask.sum() < 50:
        return None
    face = synthetic._face_landmarks(person)
    keypoints, positions = [], []
    for name in COCO_PERSON_KEYPOINT_NAMES:
        (x, y), labelled = face[name] if name in face else (person.points2d[name], True)
        positions += [float(x), float(y)]
        if not labelled or not (0 <= x <= size - 1 and 0 <= y <= size - 1):
            keypoints += [0.0, 0.0, 0]
            continue
        owners = {1 + i * synthetic._PARTS_PER_PERSON + p for p in synthetic._keypoint_owners(name, person)}
        keypoints += [float(x), float(y), 2 if int(labels[int(round(y)), int(round(x))]) in owners else 1]
    cols, rows = np.nonzero(mask.any(0))[0], np.nonzero(mask.any(1))[0]
    bbox = [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]
    return {
        "track": i,
        "bbox": bbox,
        "area": float(mask.sum()),
        "keypoints": keypoints,
        "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
        "positions": positions,  # x, y of all K keypoints, labelled or not (for the oracle)
    }


def detector_boxes(
    truth: List[Dict], size: int, rng: np.random.Generator, args
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) XYXY boxes, (N,) scores and (N,) sources (the index in ``truth`` of the person each
    box comes from; -1: a false positive) of a noisy detector on one frame's ground truth."""
    boxes, scores, sources = [], [], []
    for index, person in enumerate(truth):
        if rng.random() < args.miss_rate:
            continue
        x, y, w, h = person["bbox"]
        jitter = rng.normal(0.0, args.box_jitter, 4) * np.array([w, h, w, h])
        boxes.append(np.array([x, y, x + w, y + h]) + jitter)
        scores.append(rng.uniform(0.6, 1.0))
        sources.append(index)
    if rng.random() < args.fp_rate:
        h = rng.uniform(0.3, 0.7) * size
        x, y = rng.uniform(0, size - 0.4 * h), rng.uniform(0, size - h)
        boxes.append(np.array([x, y, x + 0.4 * h, y + h]))
        scores.append(rng.uniform(0.3, 0.7))
        sources.append(-1)
    boxes = np.clip(np.array(boxes, np.float32).reshape(-1, 4), 0, size)
    keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
    return boxes[keep], np.array(scores, np.float32)[keep], np.array(sources, np.int64)[keep]


def oracle_instances(
    truth: List[Dict], boxes: np.ndarray, scores: np.ndarray, sources: np.ndarray, noise: float, size: int, rng
) -> Instances:
    """A stand-in for the model: the ground-truth keypoints of each box's person plus N(0, ``noise``)
    px (score 1; 0 for the unlabelled ones, placed where they are, e.g. behind the head), random
    keypoints in a false positive's box (score 1); fields as the Predictor's."""
    keypoints = np.ones((len(boxes), K, 3), np.float32)
    for n, (box, source) in enumerate(zip(boxes, sources)):
        if source < 0:
            keypoints[n, :, :2] = box[:2] + rng.uniform(0, 1, (K, 2)) * (box[2:] - box[:2])
        else:
            xy = np.array(truth[source]["positions"], np.float32).reshape(K, 2) + 0.5  # continuous pixels
            keypoints[n, :, :2] = xy + rng.normal(0.0, noise, (K, 2))
            keypoints[n, :, 2] = np.array(truth[source]["keypoints"][2::3]) > 0
    instances = Instances((size, size))
    instances.pred_boxes = Boxes(torch.as_tensor(boxes))
    instances.scores = torch.as_tensor(scores)
    instances.pred_keypoints = torch.as_tensor(keypoints)
    instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
    return instances


def clear_mot(truth: List[List[Dict]], tracked: List[Instances]) -> Dict[str, int]:
    """CLEAR MOT counts of one clip (Bernardin & Stiefelhagen 2008): ground-truth boxes, misses,
    false positives, ID switches (a ground-truth track matched to another predicted id than at its
    last match). A ground-truth person keeps its last match while their box IoU is >= 0.5; the
    others are matched by Hungarian matching of least total 1 - IoU among the pairs of IoU >= 0.5
    (without the first rule, two overlapping persons' jittered boxes would swap in the matching,
    not in the tracking)."""
    counts = defaultdict(int)
    last_match: Dict[int, int] = {}
    for persons, instances in zip(truth, tracked):
        gt = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in persons)]).reshape(-1, 4)
        iou = pairwise_iou(Boxes(gt), instances.pred_boxes).numpy()
        ids = instances.track_id.tolist()
        matched = []
        for r, person in enumerate(persons):
            c = ids.index(last_match[person["track"]]) if last_match.get(person["track"]) in ids else -1
            if c >= 0 and iou[r, c] >= 0.5:
                matched.append((r, c))
                iou[r, :], iou[:, c] = 0.0, 0.0  # taken
        # pairs below IoU 0.5 are not allowed (CLEAR MOT's threshold): a cost above any set of allowed
        # pairs' (each <= 0.5), so that they never displace an allowed pair from the assignment
        valid = iou >= 0.5
        rows, cols = linear_sum_assignment(np.where(valid, 1.0 - iou, len(persons) + 1.0))
        matched += [(r, c) for r, c in zip(rows, cols) if valid[r, c]]
        counts["gt"] += len(persons)
        counts["misses"] += len(persons) - len(matched)
        counts["false_positives"] += len(instances) - len(matched)
        for r, c in matched:
            track, pred_id = persons[r]["track"], ids[c]
            counts["id_switches"] += int(track in last_match and last_match[track] != pred_id)
            last_match[track] = pred_id
    return counts


def accelerations(tracks: Dict[object, Dict[int, np.ndarray]]) -> List[float]:
    """|p(t+1) - 2 p(t) + p(t-1)| (px/frame^2) of every keypoint of every track (id -> frame ->
    (K, 2)) seen in three consecutive frames (NaN where a keypoint is NaN in one of them)."""
    out = []
    for poses in tracks.values():
        for t in poses:
            if t - 1 in poses and t + 1 in poses:
                out += np.linalg.norm(poses[t + 1] - 2 * poses[t] + poses[t - 1], axis=1).tolist()
    return out


def mean_acceleration(tracks: Dict[object, Dict[int, np.ndarray]]) -> float:
    """Mean of :func:`accelerations` over the keypoints defined in all three frames; NaN if none."""
    values = np.array(accelerations(tracks))
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def keypoint_ap(images: List[Dict], annotations: List[Dict], results: List[Dict]) -> float:
    """COCO keypoint AP (in %) of ``results`` on the clips' frames (COCO sigmas)."""
    if not results:
        return 0.0
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": []}]
    coco_gt = build_coco({"images": images, "annotations": annotations, "categories": categories})
    return 100.0 * float(evaluate_keypoints(coco_gt, results, np.array(COCO_PERSON_OKS_SIGMAS)).stats[0])


class VideoStats:
    """What the metrics need, gathered clip by clip: the COCO ground truth and results of every
    frame, the keypoints of every track over time, the CLEAR MOT counts."""

    def __init__(self, min_keypoint_score: float = 0.0):
        """``min_keypoint_score``: predicted keypoints scoring below it are left out of the jitter."""
        self.min_keypoint_score = min_keypoint_score
        self.images: List[Dict] = []
        self.annotations: List[Dict] = []
        self.results: Dict[str, List[Dict]] = {"raw": [], "smoothed": []}
        # kind ("raw", "smoothed", "truth") -> track -> frame -> (K, 2) keypoints
        self.tracks: Dict[str, Dict[Tuple[int, int], Dict[int, np.ndarray]]] = {"raw": {}, "smoothed": {}, "truth": {}}
        self.counts: Dict[str, int] = defaultdict(int)
        self.num_tracks = 0

    def add_truth(self, clip: int, truth: List[List[Dict]], size: int) -> int:
        """Adds a clip's frames and persons; returns the image id of its first frame."""
        first_image_id = len(self.images) + 1
        for t, persons in enumerate(truth):
            image_id = first_image_id + t
            self.images.append({"id": image_id, "file_name": f"clip{clip}_{t:04d}.jpg", "height": size, "width": size})
            for person in persons:
                annotation = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0}
                self.annotations.append({**person, **annotation})
                keypoints = np.array(person["keypoints"]).reshape(K, 3)
                keypoints[keypoints[:, 2] == 0] = np.nan  # unlabelled: not counted
                self.tracks["truth"].setdefault((clip, person["track"]), {})[t] = keypoints[:, :2]
        self.num_tracks += len({p["track"] for persons in truth for p in persons})
        return first_image_id

    def add_tracked(
        self, kind: str, clip: int, first_image_id: int, truth: List[List[Dict]], tracked: List[Instances]
    ) -> None:
        """Adds a clip's tracked persons, raw or smoothed (the CLEAR MOT counts from the raw
        ones: smoothing does not change the ids)."""
        if kind == "raw":
            for key, value in clear_mot(truth, tracked).items():
                self.counts[key] += value
        for t, instances in enumerate(tracked):
            for result in instances_to_coco_json(instances, first_image_id + t):
                self.results[kind].append({**result, "category_id": 1})  # Detectron2 writes the class index, 0
            for track_id, keypoints in zip(instances.track_id.tolist(), instances.pred_keypoints.numpy()):
                xy = np.where(keypoints[:, 2:] >= self.min_keypoint_score, keypoints[:, :2], np.nan)
                self.tracks[kind].setdefault((clip, track_id), {})[t] = xy


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="the model's config")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="its checkpoint (default: the main job's)")
    parser.add_argument(
        "--random-weights", action="store_true", help="no checkpoint: speed only, the figures mean nothing"
    )
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60, help="frames per clip")
    parser.add_argument("--image-size", type=int, default=256, help="S of the S x S frames")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the clips (gait and smoothing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--box-jitter", type=float, default=0.04, help="std of each box side, x box size")
    parser.add_argument("--miss-rate", type=float, default=0.05, help="probability that a person gets no box")
    parser.add_argument("--fp-rate", type=float, default=0.1, help="probability of a false-positive box per frame")
    parser.add_argument("--min-score", type=float, default=0.2, help="persons scoring below are not tracked")
    parser.add_argument(
        "--oracle-noise",
        type=float,
        metavar="PX",
        help="no model: each box gets its person's ground-truth keypoints + N(0, PX) (tracking and smoothing alone)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.clips < 1 or args.frames < 3 or not (math.isfinite(args.fps) and args.fps > 0):
        print("bench_video: needs --clips >= 1, --frames >= 3 and --fps > 0 (finite)", file=sys.stderr)
        return 1
    oracle = args.oracle_noise is not None
    if not oracle and not args.random_weights and not os.path.isfile(args.weights):
        print(
            f"bench_video: no checkpoint {args.weights}: train it first (make main), pass --weights, "
            "or --random-weights for speed alone",
            file=sys.stderr,
        )
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = "" if args.random_weights or oracle else args.weights
    cfg = tracking_config(load_depotr_config(args.config_file, ["MODEL.WEIGHTS", weights, *args.opts]))
    predictor = None if oracle else Predictor(cfg, random_weights=not weights)
    rng = np.random.default_rng([args.seed, 1])
    stats = VideoStats(cfg.MODEL.DEPOTR.KEYPOINT_SCORE_THRESH)
    predict_seconds = 0.0
    # a fresh copy per clip (built once: the config's checks and warnings once)
    fresh_trackers = {
        kind: PoseTracker.from_config(cfg, fps=args.fps, smooth=kind == "smoothed") for kind in ("raw", "smoothed")
    }
    for clip in range(args.clips):
        frames, truth = render_clip(args.seed, clip, args.frames, args.image_size, args.fps)
        first_image_id = stats.add_truth(clip, truth, args.image_size)
        raw = []
        for frame, persons in zip(frames, truth):
            boxes, scores, sources = detector_boxes(persons, args.image_size, rng, args)
            start = time.perf_counter()
            if oracle:
                instances = oracle_instances(persons, boxes, scores, sources, args.oracle_noise, args.image_size, rng)
            else:
                instances = predictor(frame, boxes, scores)
            predict_seconds += time.perf_counter() - start
            raw.append(instances[instances.scores >= args.min_score])
        for kind in ("raw", "smoothed"):
            tracker = copy.deepcopy(fresh_trackers[kind])
            stats.add_tracked(kind, clip, first_image_id, truth, [tracker.update(instances) for instances in raw])
    tracks, counts, num_frames, num_tracks = stats.tracks, stats.counts, len(stats.images), stats.num_tracks
    jitter = {kind: mean_acceleration(tracks[kind]) for kind in tracks}
    ap = {kind: keypoint_ap(stats.images, stats.annotations, stats.results[kind]) for kind in ("raw", "smoothed")}
    mota = 1.0 - (counts["misses"] + counts["false_positives"] + counts["id_switches"]) / max(counts["gt"], 1)
    model = f"ground truth + N(0, {args.oracle_noise} px)" if oracle else (weights or "random weights")
    print(f"model: {args.config_file} ({model})")
    print(
        f"clips: {args.clips} x {args.frames} frames of {args.image_size}x{args.image_size}, "
        f"{num_tracks} ground-truth tracks, {counts['gt']} persons"
    )
    print(
        f"frames/s: {num_frames / predict_seconds:.2f} "
        f"(prediction on {torch.get_num_threads()} threads, {cfg.MODEL.DEVICE})"
    )
    print(
        f"MOTA {100 * mota:.1f} % (misses {counts['misses']}, false positives {counts['false_positives']}, "
        f"ID switches {counts['id_switches']})"
    )
    print(
        f"jitter px/frame^2: raw {jitter['raw']:.2f}, smoothed {jitter['smoothed']:.2f}, "
        f"ground truth {jitter['truth']:.2f}"
    )
    print(
        f"video: idsw {counts['id_switches']} of {num_tracks} tracks, jitter raw {jitter['raw']:.2f} "
        f"smoothed {jitter['smoothed']:.2f}, AP raw {ap['raw']:.1f} smoothed {ap['smoothed']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
