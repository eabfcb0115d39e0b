"""The embedded synthetic person-keypoint dataset, generator version 3: humanoid figures with the
17 COCO keypoints (how they are made and why left / right stay decidable: docs/synthetic.md).

Shapes: K = 17 keypoints (order of ``keypoint_metadata``), images S x S (default 256) BGR, 1-4
persons per image.

Visibility (COCO rules), decided on a per-pixel label map drawn along with the image:
    * v = 0 and x = y = 0: outside the image, or a face landmark turned away from the camera;
    * v = 1: inside the image but covered by an occluder, another person or another part of the
      same figure (an arm behind the torso, the far shoulder / hip of a body turned > ~50 degrees);
    * v = 2: the pixel under the keypoint belongs to a part adjacent to that joint.

Coordinates: keypoints in COCO's "pixel index" convention (the centre of pixel (i, j) is (i, j),
as cv2 draws); Detectron2's ``load_coco_json`` adds 0.5 when loading. ``bbox`` (x, y, w, h): the
tight box of the figure's own pixels (ignoring occluders and other persons) clipped to the image,
in continuous coordinates (pixel i spans [i, i + 1)); ``area``: that mask's pixel count (COCO's
segment area, the OKS scale); figures of fewer than 50 own pixels are not annotated. (COCO and
version 4 use the visible pixels instead: docs/synthetic.md.) ``synthetic``: yaw, in-plane
rotation, stature in pixels.

Determinism: image i of split s is drawn from ``np.random.default_rng([seed, s, i])`` only, so
images can be rendered in any order by any number of processes with identical results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON

__all__ = [
    "EVERYDAY_POSE_DEG",
    "GENERATOR_VERSION",
    "JOINT_LIMITS_DEG",
    "SPLIT_CODES",
    "coco_categories",
    "render_synthetic_image",
]

# Bump when the drawing changes so that cached datasets are regenerated.
GENERATOR_VERSION = 3
DEFAULT_IMAGE_SIZE = 256
# Split name -> the second entry of the per-image seed, so train and val never share images.
SPLIT_CODES: Dict[str, int] = {"train": 0, "val": 1}

_KP = {name: i for i, name in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
_NUM_KP = len(COCO_PERSON_KEYPOINT_NAMES)
_SIDES = (("left", +1.0), ("right", -1.0))

# Joint angles in degrees: (low, high, rest) limits, then (mean, standard deviation) of everyday poses
# (standing, walking, gesturing; clipped to the limits). Signs: flexions bend forward (knee: backward),
# abductions lift the limb away from the body's midline, rotations are internal (+) / external (-),
# head pitch + looks down, torso lean + bends forward.
_JOINTS: Dict[str, Tuple[float, float, float, float, float]] = {
    "torso_lean": (-15.0, 35.0, 0.0, 3.0, 6.0),
    "torso_side": (-20.0, 20.0, 0.0, 0.0, 4.0),
    "torso_twist": (-30.0, 30.0, 0.0, 0.0, 10.0),
    "head_yaw": (-60.0, 60.0, 0.0, 0.0, 20.0),
    "head_pitch": (-25.0, 35.0, 0.0, 5.0, 10.0),
    "head_roll": (-20.0, 20.0, 0.0, 0.0, 6.0),
    "shoulder_flex": (-45.0, 170.0, 10.0, 10.0, 25.0),
    "shoulder_abd": (-15.0, 160.0, 15.0, 15.0, 12.0),
    "shoulder_rot": (-40.0, 80.0, 10.0, 10.0, 15.0),
    "elbow_flex": (0.0, 150.0, 20.0, 25.0, 25.0),
    "wrist_flex": (-45.0, 45.0, 0.0, 0.0, 15.0),
    "hip_flex": (-25.0, 120.0, 5.0, 5.0, 10.0),
    "hip_abd": (-15.0, 45.0, 5.0, 5.0, 5.0),
    "hip_rot": (-30.0, 30.0, 0.0, 0.0, 8.0),
    "knee_flex": (0.0, 140.0, 5.0, 8.0, 10.0),
    "ankle_flex": (-30.0, 30.0, 0.0, 0.0, 10.0),
}
JOINT_LIMITS_DEG: Dict[str, Tuple[float, float, float]] = {k: v[:3] for k, v in _JOINTS.items()}
EVERYDAY_POSE_DEG: Dict[str, Tuple[float, float]] = {k: v[3:] for k, v in _JOINTS.items()}
# Pose kinds and their probabilities: "walk" = everyday angles with a gait (legs and arms
# swing in opposition), "arms" = walk with each arm anywhere within its limits, "sit" =
# sitting or crouching, "free" = every angle near rest (50 %) or anywhere within its limits.
_POSE_KINDS = (("walk", 0.6), ("arms", 0.15), ("sit", 0.1), ("free", 0.15))
# Pose kinds that draw some joints from their own (mean, standard deviation) in degrees instead of
# EVERYDAY_POSE_DEG ("bend" and "raise" are generator version 4's: bending forward, arms raised).
_KIND_POSE_DEG: Dict[str, Dict[str, Tuple[float, float]]] = {
    "sit": {"hip_flex": (85.0, 15.0), "knee_flex": (90.0, 20.0), "torso_lean": (12.0, 8.0)},
    "bend": {"torso_lean": (55.0, 15.0), "knee_flex": (15.0, 12.0), "head_pitch": (-15.0, 10.0)},
    "raise": {"shoulder_flex": (150.0, 20.0), "shoulder_abd": (30.0, 20.0), "elbow_flex": (20.0, 20.0)},
}
_PER_SIDE_JOINTS = {
    k for k in JOINT_LIMITS_DEG if k.split("_")[0] in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
}

# Parts; the label map stores 1 + 16 * person + part, 255 for occluders, 0 for background.
_TORSO, _NECK, _HEAD = 0, 1, 2
_UPPER_ARM, _FOREARM, _HAND, _THIGH, _SHIN, _FOOT = 3, 5, 7, 9, 11, 13  # + 0 left, + 1 right
_PARTS_PER_PERSON = 16
_OCCLUDER_LABEL = 255
_MIN_AREA = 50  # pixels: persons with a smaller mask are not annotated (see _annotate)

# RGB skin and hair palettes (reversed to BGR where used).
_SKIN_RGB = np.array(
    [
        (255, 224, 189),
        (241, 194, 125),
        (224, 172, 105),
        (198, 134, 66),
        (141, 85, 36),
        (92, 51, 23),
        (255, 205, 148),
        (234, 192, 134),
    ],
    np.float32,
)
_HAIR_RGB = np.array(
    [(20, 20, 20), (60, 40, 30), (110, 70, 40), (200, 170, 100), (150, 150, 150), (120, 40, 20)], np.float32
)

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT


def coco_categories() -> List[Dict[str, Any]]:
    """The COCO ``categories`` entry: person, keypoint names and 1-based skeleton of the metadata table."""
    skeleton = [[_KP[a] + 1, _KP[b] + 1] for a, b, _ in COCO_PERSON_SKELETON]
    kps = list(COCO_PERSON_KEYPOINT_NAMES)
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": kps, "skeleton": skeleton}]


# Geometry
def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_DOWN = np.array([0.0, -1.0, 0.0])


def _sample_pose(
    rng: np.random.Generator,
    kinds: Sequence[Tuple[str, float]] = _POSE_KINDS,
    limits: Dict[str, Tuple[float, float, float]] = JOINT_LIMITS_DEG,
) -> Dict[str, float]:
    """Joint angles in radians; per-side joints get ``left_`` / ``right_`` prefixes. The kind
    of pose is drawn from ``kinds`` ((name, probability) pairs), angles are clipped to ``limits``;
    the prior is the same for both sides (mirror symmetric)."""
    kind = str(rng.choice([k for k, _ in kinds], p=[p for _, p in kinds]))
    swing = float(rng.uniform(-30.0, 30.0)) if kind in ("walk", "arms") else 0.0  # gait phase
    pose: Dict[str, float] = {}
    for joint, (lo, hi, rest) in limits.items():
        mean, std = EVERYDAY_POSE_DEG[joint]
        for side, sgn in _SIDES if joint in _PER_SIDE_JOINTS else (("", 0.0),):
            name = f"{side}_{joint}" if side else joint
            if kind == "free":
                a = rest + rng.normal(0.0, 0.15 * (hi - lo)) if rng.random() < 0.5 else rng.uniform(lo, hi)
            elif kind == "arms" and joint.split("_")[0] in ("shoulder", "elbow"):
                a = rng.uniform(lo, hi)
            elif joint in _KIND_POSE_DEG.get(kind, {}):
                a = rng.normal(*_KIND_POSE_DEG[kind][joint])
            else:
                a = rng.normal(mean, std)
                if joint == "hip_flex":  # the swing leg forward, the other back
                    a += sgn * swing
                elif joint == "knee_flex":
                    a += max(sgn * swing, 0.0) * 1.2
                elif joint == "shoulder_flex":  # arms swing against the legs
                    a -= sgn * swing * 0.8
            pose[name] = math.radians(float(np.clip(a, lo, hi)))
    return pose


def _sample_shape(rng: np.random.Generator) -> Dict[str, float]:
    """Segment lengths and widths as fractions of the stature (sole to top of the head)."""
    j = lambda v, r=0.07: v * float(rng.uniform(1.0 - r, 1.0 + r))  # noqa: E731
    girth = float(rng.uniform(0.85, 1.3))
    return {
        "torso": j(0.29),
        "shoulder_width": j(0.23, 0.1),
        "hip_width": j(0.15, 0.1),
        "neck": j(0.115),
        "head_rx": j(0.047, 0.05),
        "head_ry": j(0.062, 0.05),
        "head_rz": j(0.056, 0.05),
        "upper_arm": j(0.18),
        "forearm": j(0.15),
        "hand": j(0.085),
        "thigh": j(0.245),
        "shin": j(0.245),
        "foot": j(0.13),
        "ankle_height": 0.035,
        "w_neck": 0.05 * girth,
        "w_upper_arm": 0.055 * girth,
        "w_elbow": 0.045 * girth,
        "w_wrist": 0.032 * girth,
        "w_hand": 0.036 * girth,
        "w_thigh": 0.085 * girth,
        "w_knee": 0.06 * girth,
        "w_ankle": 0.04 * girth,
        "w_foot": 0.04 * girth,
        "torso_depth": 0.06 * girth,
    }


def _pose_body(shape: Dict[str, float], pose: Dict[str, float]) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """Forward kinematics. Returns named 3D points in the body frame (pelvis at the origin,
    stature units) and the head's rotation (columns: head left, up, forward)."""
    p: Dict[str, np.ndarray] = {}
    r_torso = _rz(pose["torso_side"]) @ _rx(pose["torso_lean"]) @ _ry(pose["torso_twist"])
    neck = r_torso @ np.array([0.0, shape["torso"], 0.0])
    p["neck"] = neck
    for side, sgn in _SIDES:
        a = lambda name, side=side: pose[f"{side}_{name}"]  # noqa: E731
        p[f"{side}_shoulder"] = shoulder = neck + r_torso @ np.array([sgn * shape["shoulder_width"] / 2, -0.015, 0.0])
        r_sh = r_torso @ _rz(sgn * a("shoulder_abd")) @ _rx(-a("shoulder_flex")) @ _ry(-sgn * a("shoulder_rot"))
        p[f"{side}_elbow"] = elbow = shoulder + r_sh @ _DOWN * shape["upper_arm"]
        r_el = r_sh @ _rx(-a("elbow_flex"))
        p[f"{side}_wrist"] = wrist = elbow + r_el @ _DOWN * shape["forearm"]
        p[f"{side}_hand_tip"] = wrist + r_el @ _rx(-a("wrist_flex")) @ _DOWN * shape["hand"]
        p[f"{side}_hip"] = hip = np.array([sgn * shape["hip_width"] / 2, 0.0, 0.0])
        r_hip = _rz(sgn * a("hip_abd")) @ _rx(-a("hip_flex")) @ _ry(-sgn * a("hip_rot"))
        p[f"{side}_knee"] = knee = hip + r_hip @ _DOWN * shape["thigh"]
        r_knee = r_hip @ _rx(a("knee_flex"))
        p[f"{side}_ankle"] = ankle = knee + r_knee @ _DOWN * shape["shin"]
        foot_dir = r_knee @ _rx(-(math.pi / 2 + a("ankle_flex"))) @ _DOWN
        sole = ankle + r_knee @ _DOWN * shape["ankle_height"]
        p[f"{side}_heel"] = heel = sole - 0.2 * shape["foot"] * foot_dir
        p[f"{side}_toe"] = heel + shape["foot"] * foot_dir
        # Torso outline: a box of depth 2 * torso_depth through shoulders and (wider) hips.
        for k, depth in enumerate((-1.0, 1.0)):
            d = np.array([0.0, 0.0, depth * shape["torso_depth"]])
            p[f"torso_{side}_shoulder_{k}"] = shoulder + r_torso @ d
            p[f"torso_{side}_hip_{k}"] = np.array([hip[0] * 1.15, -0.02, 0.0]) + d
        p[f"torso_{side}_neck"] = neck + r_torso @ np.array([sgn * shape["shoulder_width"] * 0.25, 0.025, 0.0])
        # The shirt's front print, just outside the torso's front face: collar corners and a
        # chest band (the band's side edge, at two heights).
        front = 1.05 * shape["torso_depth"]
        p[f"print_{side}_collar"] = neck + r_torso @ np.array([sgn * shape["shoulder_width"] * 0.2, -0.012, front])
        for k, y in enumerate((0.62, 0.72)):
            p[f"print_{side}_band_{k}"] = r_torso @ np.array(
                [sgn * shape["shoulder_width"] * 0.42, y * shape["torso"], front]
            )
    p["print_collar_tip"] = neck + r_torso @ np.array([0.0, -0.3 * shape["torso"], 1.05 * shape["torso_depth"]])
    p["torso_front"] = r_torso @ np.array([0.0, 0.5 * shape["torso"], shape["torso_depth"]])
    p["torso_back"] = r_torso @ np.array([0.0, 0.5 * shape["torso"], -shape["torso_depth"]])
    r_head = r_torso @ _ry(pose["head_yaw"]) @ _rx(pose["head_pitch"]) @ _rz(pose["head_roll"])
    p["head_center"] = (
        neck + r_torso @ np.array([0.0, 0.05, 0.0]) + r_head @ np.array([0.0, shape["neck"] - 0.05, 0.008])
    )
    return p, r_head


# Face landmarks on the unit head sphere (head frame: X left, Y up, Z forward), how far out
# they sit (x radius) and the camera-facing threshold of their surface normal below which
# they are unlabelled (v = 0).
_FACE = {
    "nose": (np.array([0.0, -0.15, 1.0]), 1.12, -0.05),
    "left_eye": (np.array([0.38, 0.15, 0.91]), 1.0, 0.05),
    "right_eye": (np.array([-0.38, 0.15, 0.91]), 1.0, 0.05),
    "left_ear": (np.array([1.0, 0.0, -0.05]), 1.0, -0.5),
    "right_ear": (np.array([-1.0, 0.0, -0.05]), 1.0, -0.5),
}
_MOUTH_DIR = np.array([0.0, -0.5, 0.87])


# Drawing
def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * _ONE).astype(np.int32)


_ARC = np.linspace(-math.pi / 2, math.pi / 2, 7)


def _capsule(p1: np.ndarray, p2: np.ndarray, r1: float, r2: float) -> np.ndarray:
    """Polygon (P, 2) of a tapered capsule from p1 (radius r1) to p2 (radius r2)."""
    d = p2 - p1
    ang = math.atan2(d[1], d[0]) if float(np.hypot(d[0], d[1])) > 1e-6 else 0.0
    t2 = ang + _ARC
    t1 = t2 + math.pi
    return np.concatenate(
        [p2 + r2 * np.stack([np.cos(t2), np.sin(t2)], 1), p1 + r1 * np.stack([np.cos(t1), np.sin(t1)], 1)]
    )


def _draw_polygon(img: np.ndarray, labels: np.ndarray, pts: np.ndarray, colour: np.ndarray, label: int) -> None:
    fp = [_fixed(pts)]
    c = tuple(float(v) for v in colour)
    cv2.fillPoly(img, fp, c, cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, fp, True, tuple(float(v) * 0.45 for v in colour), 1, cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(labels, fp, label, cv2.LINE_8, _SHIFT)


def _draw_disc(
    img: np.ndarray,
    labels: Optional[np.ndarray],
    center: np.ndarray,
    radius: float,
    colour: Sequence[float],
    label: int = 0,
    axes: Tuple[float, float] = (1.0, 1.0),
    angle: float = 0.0,
) -> None:
    c = tuple(int(v) for v in _fixed(center))
    ax = (max(1, int(round(radius * axes[0] * _ONE))), max(1, int(round(radius * axes[1] * _ONE))))
    cv2.ellipse(img, c, ax, angle, 0, 360, tuple(float(v) for v in colour), -1, cv2.LINE_AA, _SHIFT)
    if labels is not None:
        cv2.ellipse(labels, c, ax, angle, 0, 360, label, -1, cv2.LINE_8, _SHIFT)


def _random_colour(rng: np.random.Generator, s_range=(0.25, 1.0), v_range=(0.25, 0.95)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*s_range) * 255, rng.uniform(*v_range) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency noise + random shapes, uint8 (S, S, 3) BGR."""
    low = 32  # both the gradient and the noise are smooth: draw them small, then upsample
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32) / low
    a = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = _random_colour(rng, (0, 0.8), (0.1, 1.0)), _random_colour(rng, (0, 0.8), (0.1, 1.0))
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    grid = int(rng.choice([3, 6, 12]))
    noise = cv2.resize(
        rng.standard_normal((grid, grid, 3), dtype=np.float32), (low, low), interpolation=cv2.INTER_CUBIC
    )
    img += noise * rng.uniform(8.0, 35.0)
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(int(rng.integers(3, 12))):
        colour = tuple(float(v) for v in _random_colour(rng, (0, 1), (0.05, 1)))
        kind = rng.integers(4)
        thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 6))
        x0, y0 = rng.uniform(-0.1, 1.1, 2) * size
        w, h = rng.uniform(0.05, 0.5, 2) * size
        if kind == 0:
            box = ((float(x0), float(y0)), (float(w), float(h)), float(rng.uniform(0, 180)))
            cv2.drawContours(img, [np.int32(cv2.boxPoints(box))], 0, colour, thick, cv2.LINE_AA)
        elif kind == 1:
            axes, angle = (int(w / 2) + 1, int(h / 2) + 1), float(rng.uniform(0, 180))
            cv2.ellipse(img, (int(x0), int(y0)), axes, angle, 0, 360, colour, thick, cv2.LINE_AA)
        elif kind == 2:
            x1, y1 = rng.uniform(-0.1, 1.1, 2) * size
            cv2.line(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, int(rng.integers(1, 8)), cv2.LINE_AA)
        else:
            pts = (rng.uniform(-0.2, 0.2, (int(rng.integers(3, 7)), 2)) * size + [x0, y0]).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (5, 5), 0)
    return img


@dataclass
class _Person:
    points2d: Dict[str, np.ndarray]  # pixel-index image coordinates
    depth: Dict[str, float]  # camera z (toward the camera), stature units
    head_center: np.ndarray  # (3,) camera frame, stature units (y up)
    head_rot: np.ndarray  # (3, 3) head frame -> camera frame
    scale: float  # pixels per stature unit
    origin: np.ndarray  # image position of the pelvis
    shape: Dict[str, float]
    yaw: float
    roll: float


def _make_person(
    rng: np.random.Generator,
    stature_px: float,
    pose_kinds: Sequence[Tuple[str, float]] = _POSE_KINDS,
    limits: Dict[str, Tuple[float, float, float]] = JOINT_LIMITS_DEG,
    pitch_deg: float = 0.0,
    distance: Optional[float] = None,
) -> Tuple[_Person, np.ndarray]:
    """Poses a figure with its pelvis at the image origin; returns it and its rough extent
    (x0, y0, x1, y1) relative to the pelvis.

    The camera looks at the pelvis, tilted by ``pitch_deg`` (+: from above); ``distance`` (in
    statures) makes the projection perspective (points nearer the camera drawn larger:
    foreshortening), ``None`` orthographic. ``pose_kinds`` and ``limits``: :func:`_sample_pose`.
    """
    shape, pose = _sample_shape(rng), _sample_pose(rng, pose_kinds, limits)
    pts, r_head = _pose_body(shape, pose)
    yaw = rng.uniform(-100.0, 100.0) if rng.random() < 0.85 else rng.uniform(130.0, 230.0)
    roll = float(np.clip(rng.normal(0.0, 8.0), -30, 30)) if rng.random() < 0.95 else rng.uniform(-90, 90)
    cam = _rz(math.radians(roll)) @ _rx(math.radians(pitch_deg)) @ _ry(math.radians(yaw))
    names = list(pts)
    xyz = np.stack([pts[n] for n in names]) @ cam.T
    if distance is not None:  # perspective: x, y scaled by distance / (distance - z)
        xyz[:, :2] *= (distance / np.maximum(distance - xyz[:, 2], 0.2 * distance))[:, None]
    head_rot = cam @ r_head
    s = stature_px
    xy = np.stack([xyz[:, 0] * s, -xyz[:, 1] * s], 1)
    person = _Person(
        points2d=dict(zip(names, xy)),
        depth=dict(zip(names, xyz[:, 2].tolist())),
        head_center=xyz[names.index("head_center")],
        head_rot=head_rot,
        scale=s,
        origin=np.zeros(2),
        shape=shape,
        yaw=float(yaw),
        roll=float(roll),
    )
    pad = max(shape["head_ry"], shape["w_thigh"]) * s
    extent = np.concatenate([xy.min(0) - pad, xy.max(0) + pad])
    return person, extent


def _head_point(person: _Person, direction: np.ndarray, out_factor: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Image position (2,) of the head ellipsoid's point in ``direction`` (head frame), moved out
    by ``out_factor``, and the (3,) unnormalised surface normal there (camera frame)."""
    sh = person.shape
    radii = np.array([sh["head_rx"], sh["head_ry"], sh["head_rz"]])
    u = direction / np.linalg.norm(direction)
    pos = person.head_center + person.head_rot @ (radii * u * out_factor)
    return person.origin + person.scale * np.array([pos[0], -pos[1]]), person.head_rot @ (u / radii)


def _face_landmarks(person: _Person) -> Dict[str, Tuple[np.ndarray, bool]]:
    """Image position and whether each face landmark faces the camera (is labelled)."""
    out = {}
    for name, (direction, out_factor, thresh) in _FACE.items():
        xy, normal = _head_point(person, direction, out_factor)
        out[name] = (xy, float(normal[2] / np.linalg.norm(normal)) > thresh)
    return out


def _draw_head(img: np.ndarray, labels: np.ndarray, person: _Person, label: int, look: Dict[str, Any]) -> None:
    """Ray-casts the head ellipsoid (hair on top/back above ``look["hair_line"]``, shaded skin)
    and draws face features."""
    sh, s = person.shape, person.scale
    skin, hair = look["skin"], look["hair"]
    radii = np.array([sh["head_rx"], sh["head_ry"], sh["head_rz"]])
    c2d = person.origin + s * np.array([person.head_center[0], -person.head_center[1]])
    rmax = float(radii.max()) * s + 2
    h, w = labels.shape
    x0, x1 = max(int(c2d[0] - rmax), 0), min(int(c2d[0] + rmax) + 1, w)
    y0, y1 = max(int(c2d[1] - rmax), 0), min(int(c2d[1] + rmax) + 1, h)
    if x0 < x1 and y0 < y1:
        rot = person.head_rot
        quad = rot @ np.diag(1.0 / radii**2) @ rot.T
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        dx, dy = (xx - c2d[0]) / s, -(yy - c2d[1]) / s
        qa = quad[2, 2]
        qb = quad[0, 2] * dx + quad[1, 2] * dy
        qc = quad[0, 0] * dx * dx + 2 * quad[0, 1] * dx * dy + quad[1, 1] * dy * dy - 1.0
        disc = qb * qb - qa * qc
        inside = disc >= 0
        if inside.any():
            dz = (-qb + np.sqrt(np.maximum(disc, 0))) / qa
            q = np.stack([dx, dy, dz], -1)  # (h, w, 3) relative to the centre
            local = (q @ rot) / radii  # unit-sphere coordinates in the head frame
            normal = q @ quad  # camera frame (unnormalised)
            nz = normal[..., 2] / np.maximum(np.linalg.norm(normal, axis=-1), 1e-9)
            is_hair = (local[..., 1] > look["hair_line"]) | ((local[..., 2] < -0.1) & (local[..., 1] > -0.55))
            colour = np.where(is_hair[..., None], hair, skin) * (0.65 + 0.35 * nz)[..., None]
            patch = img[y0:y1, x0:x1]
            patch[inside] = np.clip(colour[inside], 0, 255).astype(np.uint8)
            labels[y0:y1, x0:x1][inside] = label
    landmarks = _face_landmarks(person)
    r_feat = max(0.9, 0.011 * s)
    for side in ("left", "right"):
        xy, facing = landmarks[f"{side}_ear"]
        if facing:
            _draw_disc(img, labels, xy, 1.4 * r_feat, skin * 0.8, label, axes=(0.7, 1.2), angle=person.roll)
    for side in ("left", "right"):
        xy, facing = landmarks[f"{side}_eye"]
        if facing:
            _draw_disc(img, labels, xy, 1.5 * r_feat, (235, 235, 235), label)
            _draw_disc(img, None, xy, 0.8 * r_feat, look["iris"])
    xy, facing = landmarks["nose"]
    if facing:
        _draw_disc(img, labels, xy, 1.1 * r_feat, skin * 0.75, label)
        mouth, normal = _head_point(person, _MOUTH_DIR)
        if normal[2] > 0.2:
            _draw_disc(img, None, mouth, 1.4 * r_feat, (40, 40, 150), axes=(1.0, 0.4), angle=person.roll)


# The shirt's front print: a collar and a chest band, by the names of their corners in _pose_body.
_PRINT_POLYGONS = (
    ("print_left_collar", "print_collar_tip", "print_right_collar"),
    ("print_left_band_0", "print_right_band_0", "print_right_band_1", "print_left_band_1"),
)
# Extra garments of a figure: called with the figure and its look (colours "skin", "shirt", "pants", ...),
# returns (depth, part, polygon (P, 2), colour) of each polygon to draw among the parts.
ExtraParts = Callable[[_Person, Dict[str, Any]], List[Tuple[float, int, np.ndarray, np.ndarray]]]


def _render_person(
    img: np.ndarray, person: _Person, rng: np.random.Generator, extra_parts: Optional[ExtraParts] = None
) -> np.ndarray:
    """Draws one figure far-to-near onto ``img`` (with the polygons of ``extra_parts``, if
    given); returns its own part-label layer (S, S) uint8 (0 = not this figure, 1 + part
    otherwise), before other figures or occluders."""
    sh, s, P, Z = person.shape, person.scale, person.points2d, person.depth
    layer = np.zeros(img.shape[:2], np.uint8)
    skin = _SKIN_RGB[rng.integers(len(_SKIN_RGB))][::-1] + rng.uniform(-12, 12, 3).astype(np.float32)
    shirt, pants = _random_colour(rng), _random_colour(rng)
    shoes = _random_colour(rng, (0, 0.6), (0.05, 0.4))
    hair = _HAIR_RGB[rng.integers(len(_HAIR_RGB))][::-1].copy()
    hair_line = float(rng.uniform(0.2, 0.5)) if rng.random() < 0.92 else 2.0  # 2.0: bald
    forearm_col = skin if rng.random() < 0.5 else shirt
    shin_col = skin if rng.random() < 0.25 else pants
    iris = tuple(float(v) for v in rng.uniform(10, 90, 3))
    look = {"skin": skin, "shirt": shirt, "pants": pants, "hair": hair, "hair_line": hair_line, "iris": iris}
    torso_center_z = 0.5 * (Z["torso_front"] + Z["torso_back"])
    items: List[Tuple[float, int, Callable[[], None]]] = []  # (depth, tie-break, draw)

    def polygon(depth: float, part: int, poly: np.ndarray, colour: np.ndarray) -> None:
        items.append((depth, len(items), lambda: _draw_polygon(img, layer, poly, colour, part + 1)))

    def limb(part: int, a: str, b: str, wa: float, wb: float, colour: np.ndarray, bias: float) -> None:
        """A tapered capsule from point a to b; behind the torso's centre in shadow (up to 35 % darker)."""
        behind = torso_center_z - 0.5 * (Z[a] + Z[b])
        shaded = colour * (1.0 - 0.35 * float(np.clip(behind / 0.08, 0.0, 1.0)))
        polygon(0.5 * (Z[a] + Z[b]) + bias, part, _capsule(P[a], P[b], wa * s / 2, wb * s / 2), shaded)

    torso_names = [n for n in P if n.startswith("torso_") and n not in ("torso_front", "torso_back")]
    hull = cv2.convexHull(np.stack([P[n] for n in torso_names]).astype(np.float32))[:, 0]
    torso_z = float(np.mean([Z[n] for n in torso_names]))
    polygon(torso_z, _TORSO, hull, shirt)
    if Z["torso_front"] > Z["torso_back"] + 0.02:  # the front faces the camera: its print shows
        print_colour = shirt + (255.0 - shirt) * 0.75 if float(shirt.mean()) < 128 else shirt * 0.3
        for names in _PRINT_POLYGONS:
            polygon(torso_z + 1e-4, _TORSO, np.stack([P[n] for n in names]), print_colour)
    limb(_NECK, "neck", "head_center", sh["w_neck"], sh["w_neck"] * 0.9, skin, 0.002)
    items.append((person.head_center[2] + 0.05, len(items), lambda: _draw_head(img, layer, person, _HEAD + 1, look)))
    for k, (side, _) in enumerate(_SIDES):
        limb(_UPPER_ARM + k, f"{side}_shoulder", f"{side}_elbow", sh["w_upper_arm"], sh["w_elbow"], shirt, 0.01)
        limb(_FOREARM + k, f"{side}_elbow", f"{side}_wrist", sh["w_elbow"], sh["w_wrist"], forearm_col, 0.011)
        limb(_HAND + k, f"{side}_wrist", f"{side}_hand_tip", sh["w_hand"], sh["w_hand"] * 0.8, skin, 0.012)
        limb(_THIGH + k, f"{side}_hip", f"{side}_knee", sh["w_thigh"], sh["w_knee"], pants, -0.005)
        limb(_SHIN + k, f"{side}_knee", f"{side}_ankle", sh["w_knee"], sh["w_ankle"], shin_col, -0.004)
        limb(_FOOT + k, f"{side}_heel", f"{side}_toe", sh["w_foot"], sh["w_foot"] * 0.8, shoes, -0.003)
    for depth, part, poly, colour in extra_parts(person, look) if extra_parts is not None else ():
        polygon(depth, part, poly, colour)
    for _, _, draw in sorted(items, key=lambda it: it[:2]):
        draw()
    return layer


# Depth (stature units) behind the torso's centre beyond which a shoulder / hip only counts as
# visible on its limb's pixels: 0.09 ~ a 52 degree turn for shoulders, 0.055 ~ 47 for hips.
_TORSO_HIDES_BEYOND = {"shoulder": 0.09, "hip": 0.055}


def _keypoint_owners(name: str, person: _Person) -> Tuple[int, ...]:
    """Parts whose pixels make keypoint ``name`` visible (v = 2)."""
    if name in _FACE:
        return (_HEAD,)
    side, joint = name.split("_", 1)
    owners = {
        "shoulder": (_UPPER_ARM, _TORSO),
        "elbow": (_UPPER_ARM, _FOREARM),
        "wrist": (_FOREARM, _HAND),
        "hip": (_THIGH, _TORSO),
        "knee": (_THIGH, _SHIN),
        "ankle": (_SHIN, _FOOT),
    }[joint]
    if owners[1] != _TORSO:
        return tuple(part + (side == "right") for part in owners)
    # The torso hides a shoulder / hip once the body turns more than ~50 degrees away from the camera (a 3/4
    # view shows both): compared with the torso's depth at the joint's level (lean moves the chest).
    torso_z = float(np.mean([z for n, z in person.depth.items() if n.startswith("torso_") and f"_{joint}_" in n]))
    limb = owners[0] + (side == "right")
    return (limb, _TORSO) if person.depth[name] >= torso_z - _TORSO_HIDES_BEYOND[joint] else (limb,)


def _draw_occluder(
    img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, center: np.ndarray, size: float
) -> None:
    mask = np.zeros(labels.shape, np.uint8)
    w, h = rng.uniform(0.4, 1.0, 2) * size
    angle = float(rng.uniform(0, 180))
    if rng.random() < 0.5:
        box = cv2.boxPoints(((float(center[0]), float(center[1])), (float(w), float(h)), angle))
        cv2.fillPoly(mask, [_fixed(box)], 1, cv2.LINE_8, _SHIFT)
    else:
        axes = (int(w / 2 * _ONE) + 1, int(h / 2 * _ONE) + 1)
        cv2.ellipse(mask, tuple(int(v) for v in _fixed(center)), axes, angle, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    sel = mask.astype(bool)
    if not sel.any():
        return
    colour = _random_colour(rng, (0, 1), (0.1, 1))
    ys, xs = np.nonzero(sel)
    if rng.random() < 0.5:  # stripes
        a = rng.uniform(0, math.pi)
        period = rng.uniform(3, 10)
        stripe = (np.sin((xs * math.cos(a) + ys * math.sin(a)) * 2 * math.pi / period) > 0)[:, None]
        texture = np.where(stripe, colour, colour * 0.5)
    else:
        texture = colour + rng.normal(0, 18, (len(xs), 3))
    img[ys, xs] = np.clip(texture, 0, 255).astype(np.uint8)
    labels[ys, xs] = _OCCLUDER_LABEL


# Image side S -> its (2S, 2S, 3) noise bank.
_NOISE_BANKS: Dict[int, np.ndarray] = {}


def _sensor_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3) float32 unit Gaussian noise: a random window of a fixed, seeded (2S, 2S) noise
    bank of side S (drawing fresh noise per image took half of the rendering time). Bank and window
    depend on S and ``rng`` only, not on the sizes rendered before in the process."""
    if size not in _NOISE_BANKS:
        _NOISE_BANKS[size] = np.random.default_rng(20240531).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
    ox, oy = rng.integers(0, size + 1, 2)
    return _NOISE_BANKS[size][oy : oy + size, ox : ox + size]


def _place(person: _Person, extent: np.ndarray, cx: float, cy: float) -> None:
    """Moves a figure of :func:`_make_person` so that its extent's centre is at (cx, cy)."""
    person.origin = np.array([cx - (extent[0] + extent[2]) / 2, cy - (extent[1] + extent[3]) / 2])
    person.points2d = {k: v + person.origin for k, v in person.points2d.items()}


def _composite(labels: np.ndarray, layer: np.ndarray, i: int) -> np.ndarray:
    """The label map with person ``i``'s part layer drawn over it."""
    return np.where(layer > 0, layer + i * _PARTS_PER_PERSON, labels).astype(np.uint8)


def _person_pixels(labels: np.ndarray, i: int) -> np.ndarray:
    """(S, S) bool: the pixels of label map ``labels`` that show person ``i`` (its part labels
    1 + 16 i .. 16 + 16 i, see :func:`_composite`)."""
    return (labels > i * _PARTS_PER_PERSON) & (labels <= (i + 1) * _PARTS_PER_PERSON)


def _keypoint_positions(persons: Sequence[_Person], size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, K, 2) image positions of the persons' keypoints, (N, K) whether each is labelled by
    the camera-facing rule (before occlusion), and (N, K) whether it lies inside the image."""
    n = len(persons)
    kp_xy = np.zeros((n, _NUM_KP, 2))
    kp_labelled = np.ones((n, _NUM_KP), bool)
    for i, person in enumerate(persons):
        face = _face_landmarks(person)
        for name, k in _KP.items():
            if name in face:
                kp_xy[i, k], kp_labelled[i, k] = face[name]
            else:
                kp_xy[i, k] = person.points2d[name]
    inside = (kp_xy >= 0).all(-1) & (kp_xy <= size - 1).all(-1)
    return kp_xy, kp_labelled, inside


def _occlude(
    img: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    persons: Sequence[_Person],
    count_p: Sequence[float],
    size_range: Tuple[float, float],
    max_size: float = math.inf,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws 0 .. len(count_p) - 1 occluders (count with probabilities ``count_p``) of side
    ``size_range`` x the stature (at most ``max_size`` px) over labelled keypoints inside the image;
    returns :func:`_keypoint_positions`."""
    kp_xy, kp_labelled, inside = _keypoint_positions(persons, img.shape[0])
    for _ in range(int(rng.choice(len(count_p), p=count_p))):
        i = int(rng.integers(len(persons)))
        cand = np.nonzero(inside[i] & kp_labelled[i])[0]
        if len(cand) == 0:
            continue
        size_px = min(rng.uniform(*size_range) * persons[i].scale, max_size)
        center = kp_xy[i, int(rng.choice(cand))] + rng.uniform(-0.4, 0.4, 2) * size_px
        _draw_occluder(img, labels, rng, center, size_px)
    return kp_xy, kp_labelled, inside


def _sensor(img: np.ndarray, rng: np.random.Generator, blur_prob: float = 0.15) -> np.ndarray:
    """A 3x3 Gaussian blur with probability ``blur_prob``, then Gaussian sensor noise."""
    if rng.random() < blur_prob:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = _sensor_noise(rng, img.shape[0]) * rng.uniform(2.0, 7.0)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _annotate(
    persons: Sequence[_Person],
    layers: Sequence[np.ndarray],
    labels: np.ndarray,
    kp_xy: np.ndarray,
    kp_labelled: np.ndarray,
    inside: np.ndarray,
    extra: Optional[Sequence[Dict[str, Any]]] = None,
    visible: bool = False,
) -> Tuple[List[Dict[str, Any]], List[int]]:
    """COCO annotations of the persons (visibility from the final label map ``labels``) and, for
    each, the index of its person in ``persons``; ``extra[i]`` is merged into person i's ``synthetic``.
    ``bbox`` and ``area`` are those of the person's mask: with ``visible`` (version 4) its pixels in
    ``labels``, else (version 3) its own layer ``layers[i]``; masks under 50 pixels are left out."""
    annotations, indices = [], []
    for i, person in enumerate(persons):
        mask = _person_pixels(labels, i) if visible else layers[i] > 0
        area = int(mask.sum())
        if area < _MIN_AREA:
            continue
        cols, rows = np.nonzero(mask.any(0))[0], np.nonzero(mask.any(1))[0]
        bbox = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        kps: List[float] = []
        for name, k in _KP.items():
            x, y = kp_xy[i, k]
            if not (kp_labelled[i, k] and inside[i, k]) or (round(x, 2) == 0 and round(y, 2) == 0):
                kps += [0.0, 0.0, 0]
                continue
            lab = int(labels[int(round(y)), int(round(x))])
            own = {1 + i * _PARTS_PER_PERSON + p for p in _keypoint_owners(name, person)}
            kps += [round(float(x), 2), round(float(y), 2), 2 if lab in own else 1]
        synthetic = dict(yaw_deg=round(person.yaw, 2), rotation_deg=round(person.roll, 2))
        synthetic.update(stature_px=round(person.scale, 2), **(extra[i] if extra is not None else {}))
        num = sum(1 for v in kps[2::3] if v > 0)
        annotations.append(
            dict(bbox=bbox, area=area, iscrowd=0, category_id=1, keypoints=kps, num_keypoints=num, synthetic=synthetic)
        )
        indices.append(i)
    return annotations, indices


def render_synthetic_image(
    seed: int, split_code: int, index: int, image_size: int = DEFAULT_IMAGE_SIZE
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Renders image ``index`` of a split.

    Returns:
        image: uint8 (S, S, 3) BGR.
        annotations: per person ``bbox`` [x, y, w, h], ``area``, ``keypoints`` (3K floats, COCO
            pixel-index convention, v = 0 -> x = y = 0), ``num_keypoints``, ``synthetic``; no ids.
    """
    rng = np.random.default_rng([int(seed), int(split_code), int(index)])
    size = int(image_size)
    img = _background(rng, size)
    labels = np.zeros((size, size), np.uint8)

    n = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    hi = 0.9 - 0.1 * (n - 1)
    statures = np.sort(rng.uniform(0.4, hi, n)) * size  # small (far) figures are drawn first
    slots = rng.permutation(n)
    persons: List[_Person] = []
    layers: List[np.ndarray] = []
    for i in range(n):
        person, ext = _make_person(rng, float(statures[i]))
        ext_w, ext_h = ext[2] - ext[0], ext[3] - ext[1]
        cx = (slots[i] + rng.uniform(0.25, 0.75)) / n * size
        cx = np.clip(cx, ext_w / 2, size - ext_w / 2) if ext_w < size else size / 2
        cy = rng.uniform(ext_h / 2, size - ext_h / 2) if ext_h < size else size / 2
        if rng.random() < 0.2:  # cut by the image border
            axis = int(rng.integers(2))
            push = rng.uniform(0.15, 0.45) * (ext_w if axis == 0 else ext_h) * rng.choice([-1.0, 1.0])
            cx, cy = (cx + push, cy) if axis == 0 else (cx, cy + push)
        _place(person, ext, cx, cy)
        layer = _render_person(img, person, rng)
        labels = _composite(labels, layer, i)
        persons.append(person)
        layers.append(layer)

    keypoints = _occlude(img, labels, rng, persons, (0.45, 0.4, 0.15), (0.1, 0.3))
    return _sensor(img, rng), _annotate(persons, layers, labels, *keypoints)[0]
