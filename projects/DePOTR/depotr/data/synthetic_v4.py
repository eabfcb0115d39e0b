"""Synthetic generator version 4: persons that look and gather like COCO's (what it adds to version 3,
:mod:`depotr.data.synthetic`: docs/synthetic.md).

Shapes: K = 17 keypoints, images S x S (default 256) BGR, 1-6 persons per image.

Annotations as version 3's, with COCO's boxes: ``bbox`` is the tight box and ``area`` the pixel
count of the figure's *visible* pixels (not covered by occluders or nearer persons), and a figure
with fewer than 50 visible pixels is not annotated. Occluded keypoints (v = 1) may lie outside the
box, as in COCO; visible ones (v = 2) lie on its visible pixels. ``synthetic`` adds ``framing``,
``truncated`` (a keypoint of the figure lies outside the image, or the figure's pixels, hidden ones
included, reach the image border), ``occluded_fraction`` (v = 1 among the labelled keypoints) and
``crowd_index`` (CrowdPose's, :mod:`depotr.data.person_bins`).

Determinism: image i of split s is drawn from ``np.random.default_rng([seed, s, i, 4])`` only.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Tuple

import cv2
import numpy as np

from . import synthetic as v3
from .person_bins import crowd_indices, occluded_fraction

__all__ = ["FRAMINGS", "GENERATOR_VERSION", "render_synthetic_image_v4"]

GENERATOR_VERSION = 4
# Pose kinds of version 4 and their probabilities (see synthetic._sample_pose).
POSE_KINDS = (("walk", 0.42), ("arms", 0.1), ("raise", 0.1), ("sit", 0.13), ("bend", 0.1), ("free", 0.15))
# Version 3's limits, with a deeper forward bend.
JOINT_LIMITS = {**v3.JOINT_LIMITS_DEG, "torso_lean": (-15.0, 80.0, 0.0)}
# Framing of a figure -> (probability, stature range as multiples of the image side).
FRAMINGS: Dict[str, Tuple[float, Tuple[float, float]]] = {
    "full": (0.45, (0.22, 0.95)),
    "upper": (0.33, (1.1, 1.8)),
    "closeup": (0.22, (2.2, 3.4)),
}
PERSONS_PER_IMAGE = ((1, 0.3), (2, 0.25), (3, 0.18), (4, 0.12), (5, 0.08), (6, 0.07))
GROUP_PROB = 0.35  # images with several persons drawn as one overlapping group
SKIRT_PROB = 0.2
JPEG_PROB = 0.4
# Parts whose pixels show the shirt and the trousers (+ 1: the label of part p is p + 1).
_SHIRT_LABELS = (v3._TORSO + 1, v3._UPPER_ARM + 1, v3._UPPER_ARM + 2)
_PANTS_LABELS = (v3._THIGH + 1, v3._THIGH + 2)


def _pattern(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """(h, w) float32 texture in [0, 1]: stripes, checks or blotchy noise of about ``period`` px."""
    kind = int(rng.integers(3))
    if kind == 2:
        low = rng.random((max(2, int(h / period) + 2), max(2, int(w / period) + 2)), dtype=np.float32)
        return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = float(rng.uniform(0, math.pi))
    u = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period)) > 0
    if kind == 0:
        return u.astype(np.float32)
    v = np.sin((-xx * math.sin(a) + yy * math.cos(a)) * (2 * math.pi / period)) > 0
    return (u ^ v).astype(np.float32)


def _dress(img: np.ndarray, layer: np.ndarray, person: v3._Person, rng: np.random.Generator) -> None:
    """Textures the shirt and trousers of a drawn figure and lights it from one side (one
    multiplicative factor map over the figure's box, 1 outside the figure)."""
    ys, xs = np.nonzero(layer)
    if len(ys) == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = layer[y0:y1, x0:x1]
    h, w = sub.shape
    a = float(rng.uniform(0, 2 * math.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    factor = 1.0 + float(rng.uniform(0.0, 0.5)) * ((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / max(h, w)
    for labels in (_SHIRT_LABELS, _PANTS_LABELS):
        if rng.random() < 0.5:
            period = max(3.0, float(rng.uniform(0.02, 0.06)) * person.scale)
            shade = 1.0 - float(rng.uniform(0.1, 0.25)) * _pattern(rng, h, w, period)
            factor = np.where(np.isin(sub, labels), factor * shade, factor)
    factor[sub == 0] = 1.0
    img[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1] * factor[..., None], 0, 255).astype(np.uint8)


def _skirt(person: v3._Person, colours: Dict[str, np.ndarray]) -> List[Tuple[float, int, np.ndarray, np.ndarray]]:
    """A flared skirt from the hips to just above the knees, drawn just in front of the thighs
    (labelled torso: knees it covers are occluded, v = 1)."""
    p, z = person.points2d, person.depth
    hips = [p["left_hip"], p["right_hip"]]
    centre = (hips[0] + hips[1]) / 2
    hem = [h + 0.8 * (p[f"{side}_knee"] - h) for h, side in zip(hips, ("left", "right"))]
    hem_centre = (hem[0] + hem[1]) / 2
    flare = [hem_centre + 1.5 * (e - hem_centre) for e in hem]
    waist = [centre + 1.2 * (h - centre) for h in hips]
    poly = np.stack([waist[0], waist[1], flare[1], flare[0]])
    depth = 0.5 * (z["left_hip"] + z["right_hip"]) + 0.006
    return [(depth, v3._TORSO, poly, colours["pants"])]


def _clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Draws 2-6 textured rectangles (walls, furniture, posters) onto the background."""
    size = img.shape[0]
    for _ in range(int(rng.integers(2, 7))):
        w, h = (rng.uniform(0.1, 0.6, 2) * size).astype(int) + 2
        x0, y0 = rng.integers(-w // 2, size - w // 2), rng.integers(-h // 2, size - h // 2)
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
        if xa >= xb or ya >= yb:
            continue
        pattern = _pattern(rng, yb - ya, xb - xa, float(rng.uniform(3, 16)))
        c0, c1 = v3._random_colour(rng, (0, 0.8), (0.1, 1.0)), v3._random_colour(rng, (0, 0.8), (0.1, 1.0))
        img[ya:yb, xa:xb] = (c0 * (1 - pattern[..., None]) + c1 * pattern[..., None]).astype(np.uint8)


def _layout(rng: np.random.Generator, n: int, size: int) -> List[Tuple[str, float]]:
    """(framing, stature in px) of each person, far (small) to near (large). At most one person
    of an image is cut down to an upper body or a close-up: the nearest one."""
    names = list(FRAMINGS)
    near = str(rng.choice(names, p=[FRAMINGS[k][0] for k in names]))
    out = []
    for framing in ["full"] * (n - 1) + [near]:
        lo, hi = FRAMINGS[framing][1]
        ratio = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        out.append((framing, ratio * size))
    return sorted(out, key=lambda fs: fs[1])


def _touches_border(layer: np.ndarray) -> bool:
    """Whether a figure's part layer has pixels on the image's first or last row or column."""
    return bool(layer[0].any() or layer[-1].any() or layer[:, 0].any() or layer[:, -1].any())


class _Rendering(NamedTuple):
    """An image of version 4 with what it was made from (for tests of its annotations)."""

    image: np.ndarray  # uint8 (S, S, 3) BGR
    annotations: List[Dict[str, Any]]  # as render_synthetic_image_v4's
    labels: np.ndarray  # uint8 (S, S) final label map (encoding: synthetic._composite)
    layers: List[np.ndarray]  # per drawn person, uint8 (S, S) own part layer (synthetic._render_person)
    person_index: List[int]  # per annotation, the index of its person in ``layers``


def render_synthetic_image_v4(
    seed: int, split_code: int, index: int, image_size: int = v3.DEFAULT_IMAGE_SIZE
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Renders image ``index`` of a split with generator version 4: uint8 (S, S, 3) BGR image and
    annotations as :func:`depotr.data.synthetic.render_synthetic_image`'s (but see the module docstring)."""
    rendering = _render(seed, split_code, index, image_size)
    return rendering.image, rendering.annotations


def _render(seed: int, split_code: int, index: int, image_size: int) -> _Rendering:
    """:func:`render_synthetic_image_v4` with the label map and layers it annotated from."""
    rng = np.random.default_rng([int(seed), int(split_code), int(index), GENERATOR_VERSION])
    size = int(image_size)
    img = v3._background(rng, size)
    _clutter(img, rng)
    labels = np.zeros((size, size), np.uint8)

    n = int(rng.choice([k for k, _ in PERSONS_PER_IMAGE], p=[p for _, p in PERSONS_PER_IMAGE]))
    group = n > 1 and rng.random() < GROUP_PROB
    layout = _layout(rng, n, size)
    if group:  # similar sizes, side by side around one centre
        common = float(np.median([s for f, s in layout if f == "full"] or [0.5 * size]))
        layout = [(f, common * rng.uniform(0.85, 1.15) if f == "full" else s) for f, s in layout]
        centre = rng.uniform(0.3, 0.7) * size
    slots = rng.permutation(n)
    persons: List[v3._Person] = []
    layers: List[np.ndarray] = []
    for i, (framing, stature) in enumerate(layout):
        distance = float(rng.uniform(1.5, 6.0)) if rng.random() < 0.5 else None
        pitch = float(np.clip(rng.normal(5.0, 12.0), -25.0, 40.0))
        person, ext = v3._make_person(rng, stature, POSE_KINDS, JOINT_LIMITS, pitch, distance)
        ext_w, ext_h = ext[2] - ext[0], ext[3] - ext[1]
        if group:
            cx = centre + rng.normal(0.0, 0.35) * min(ext_w, size / 2)
        else:
            cx = (slots[i] + rng.uniform(0.2, 0.8)) / n * size
        if framing == "full":
            cx = np.clip(cx, ext_w / 2, size - ext_w / 2) if ext_w < size else size / 2
            cy = rng.uniform(ext_h / 2, size - ext_h / 2) if ext_h < size else size / 2
            if rng.random() < 0.15:  # pushed over a border
                push = rng.uniform(0.15, 0.45) * rng.choice([-1.0, 1.0])
                cx, cy = (cx + push * ext_w, cy) if rng.random() < 0.5 else (cx, cy + push * ext_h)
        else:  # the head near the top and inside the image, the body cut by the bottom border
            # the head's top (1.1 x its y radius above its centre) below the extent's top
            top = person.points2d["head_center"][1] - person.shape["head_ry"] * person.scale * 1.1 - ext[1]
            cy = rng.uniform(0.0, 0.2) * size - top + ext_h / 2
            head_x = person.points2d["head_center"][0] - (ext[0] + ext[2]) / 2  # relative to the extent's centre
            cx = np.clip(cx, 0.2 * size, 0.8 * size) - head_x
        v3._place(person, ext, float(cx), float(cy))
        layer = v3._render_person(img, person, rng, _skirt if rng.random() < SKIRT_PROB else None)
        _dress(img, layer, person, rng)
        labels = v3._composite(labels, layer, i)
        persons.append(person)
        layers.append(layer)

    kp_xy, kp_labelled, inside = v3._occlude(img, labels, rng, persons, (0.35, 0.35, 0.2, 0.1), (0.1, 0.35), 0.5 * size)

    img = v3._sensor(img, rng, blur_prob=0.3)
    if rng.random() < JPEG_PROB:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 60))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img

    extra = [
        {"framing": f, "truncated": bool(not inside[i].all()) or _touches_border(layers[i])}
        for i, (f, _) in enumerate(layout)
    ]
    annotations, person_index = v3._annotate(persons, layers, labels, kp_xy, kp_labelled, inside, extra, True)
    if annotations:
        crowd = crowd_indices([a["keypoints"] for a in annotations], [a["bbox"] for a in annotations])
        for anno, index_ in zip(annotations, crowd):
            occluded = round(occluded_fraction(anno["keypoints"]), 4)
            anno["synthetic"].update(occluded_fraction=occluded, crowd_index=round(float(index_), 4))
    return _Rendering(img, annotations, labels, layers, person_index)
