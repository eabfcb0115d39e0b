"""The synthetic persons in MPII's files: the whole MPII path (reading the files, training, PCKh)
on CPU with no download (docs/datasets.md).

Each split's synthetic COCO json is converted into MPII's annotation json (and, for the validation
split, the official ``gt_valid.mat`` layout) with MPII's 16 joints (0-based COCO pixels written
1-based): the COCO keypoints of the same name; pelvis = mid-hips, thorax = mid-shoulders (where
both are labelled); with ``u`` = (mean of the labelled nose, eyes and ears) - thorax, upper neck =
thorax + ``NECK_FRACTION`` u and head top = thorax + ``HEAD_TOP_FRACTION`` u; the head box is the
axis-aligned square centred between them, of side their distance (head size 0.6 x its diagonal =
0.85 x the neck-to-top segment). A derived joint outside the image is not labelled. ``center``,
``scale`` are set so that :func:`depotr.data.mpii.mpii_box`'s HRNet adjustments give back the
box centre and a square of 1.25 x max(w, h). The validation split keeps the persons with a head box.

Files go next to the synthetic cache entry, in ``<root>/mpii-r2-<entry>/``, each written whole or
not at all; derived from the entry only, so an existing json (written last) is reused once the
entry has been checked (or generated again). (Revision 2: ``center`` is the 1-based pixel index of
the box centre; the ``mpii-<entry>`` folders of revision 1 put it 0.5 px further right and down
and are not read.)
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from scipy.io import savemat

from ..file_io import atomic_write
from .keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, MPII_KEYPOINT_NAMES, MPII_OFFICIAL_JOINT_NAMES
from .mpii import register_mpii
from .synthetic import GENERATOR_VERSION
from .synthetic_cache import ensure_synthetic_split, synthetic_split_paths

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_MPII_DATASET_NAMES",
    "coco_person_to_mpii",
    "ensure_synthetic_mpii_split",
    "register_synthetic_mpii_datasets",
]

SYNTHETIC_MPII_DATASET_NAMES: Dict[str, str] = {"train": "synthetic_mpii_train", "val": "synthetic_mpii_val"}
NECK_FRACTION = 0.4
HEAD_TOP_FRACTION = 1.5
_COCO = {name: i for i, name in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
_FACE = [_COCO[n] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
# MPII joints copied from the COCO keypoint of the same name.
_SAME = [(j, _COCO[name]) for j, name in enumerate(MPII_KEYPOINT_NAMES) if name in _COCO]
_MPII = {name: j for j, name in enumerate(MPII_KEYPOINT_NAMES)}


def coco_person_to_mpii(
    keypoints: np.ndarray, width: int, height: int
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], int]:
    """MPII joints of one COCO person (see the module docstring).

    Args:
        keypoints: (17, 3) COCO x, y, v (0-based pixels). width, height: the image size.
    Returns:
        joints (16, 2) 0-based (0 where not labelled), labelled bool (16,), head box (2, 2)
        [[x1, y1], [x2, y2]] 0-based or None, and how many derived joints fell outside the image.
    """
    xy, labelled_coco = keypoints[:, :2].astype(np.float64), keypoints[:, 2] > 0
    joints, labelled = np.zeros((16, 2)), np.zeros(16, bool)
    for j, k in _SAME:
        joints[j], labelled[j] = xy[k], labelled_coco[k]
    for name, (a, b) in (("pelvis", ("left_hip", "right_hip")), ("thorax", ("left_shoulder", "right_shoulder"))):
        if labelled_coco[_COCO[a]] and labelled_coco[_COCO[b]]:
            joints[_MPII[name]], labelled[_MPII[name]] = (xy[_COCO[a]] + xy[_COCO[b]]) / 2, True
    face = [k for k in _FACE if labelled_coco[k]]
    head_box = None
    if labelled[_MPII["thorax"]] and face:
        thorax = joints[_MPII["thorax"]]
        u = xy[face].mean(axis=0) - thorax
        neck, top = thorax + NECK_FRACTION * u, thorax + HEAD_TOP_FRACTION * u
        centre, half = (neck + top) / 2, np.linalg.norm(top - neck) / 2
        head_box = np.stack([centre - half, centre + half])
        for name, point in (("upper_neck", neck), ("head_top", top)):
            joints[_MPII[name]], labelled[_MPII[name]] = point, True
    derived = [_MPII[n] for n in ("pelvis", "thorax", "upper_neck", "head_top")]
    inside = (joints[:, 0] >= 0) & (joints[:, 0] <= width) & (joints[:, 1] >= 0) & (joints[:, 1] <= height)
    outside = [j for j in derived if labelled[j] and not inside[j]]
    labelled[outside] = False
    joints[~labelled] = 0.0
    return joints, labelled, head_box, len(outside)


def _convert(coco: Dict[str, Any], keep_without_head_box: bool) -> Tuple[List[Dict[str, Any]], List[np.ndarray], Dict]:
    """MPII json entries and 0-based head boxes of a synthetic COCO dict, and counts."""
    images = {image["id"]: image for image in coco["images"]}
    entries, head_boxes = [], []
    stats = {"persons": 0, "dropped_without_head_box": 0, "joints_outside_image": 0}
    for anno in coco["annotations"]:
        if anno.get("iscrowd", 0):
            continue
        image = images[anno["image_id"]]
        kps = np.asarray(anno["keypoints"], np.float64).reshape(-1, 3)
        joints, labelled, head_box, outside = coco_person_to_mpii(kps, image["width"], image["height"])
        stats["joints_outside_image"] += outside
        if head_box is None and not keep_without_head_box:
            stats["dropped_without_head_box"] += 1
            continue
        x, y, w, h = anno["bbox"]
        scale = max(w, h) / 200.0
        # The box is in continuous pixels: its centre c is 1-based pixel index c + 0.5.
        entry = {"image": image["file_name"], "center": [x + w / 2 + 0.5, y + h / 2 + 0.5 - 15 * scale], "scale": scale}
        joints_1 = (joints + 1.0 * labelled[:, None]).tolist()  # 1-based, 0 where not labelled
        entries.append({**entry, "joints": joints_1, "joints_vis": labelled.astype(int).tolist()})
        head_boxes.append(head_box)
        stats["persons"] += 1
    return entries, head_boxes, stats


def _write_gt_mat(path: str, entries: List[Dict[str, Any]], head_boxes: List[np.ndarray]) -> None:
    """The official gt_valid.mat layout (1-based) of the entries."""
    names = np.empty((1, 16), dtype=object)
    for j, name in enumerate(MPII_OFFICIAL_JOINT_NAMES):
        names[0, j] = np.array([name])
    joints = np.asarray([e["joints"] for e in entries], np.float64).reshape(-1, 16, 2).transpose(1, 2, 0)
    visible = np.asarray([e["joints_vis"] for e in entries], np.float64).reshape(-1, 16)
    boxes = (np.asarray(head_boxes, np.float64).reshape(-1, 2, 2) + 1.0).transpose(1, 2, 0)
    mat = dict(dataset_joints=names, jnt_missing=(1.0 - visible).T, pos_gt_src=joints, headboxes_src=boxes)
    atomic_write(path, lambda f: savemat(f, mat))


def synthetic_mpii_paths(
    root: str, split: str, num_images: int, seed: int, image_size: int, version: int = GENERATOR_VERSION
) -> Dict[str, Any]:
    """``json_file``, ``gt_mat_file`` (None for train) and ``image_root`` of a spec's MPII files
    (generator ``version``)."""
    paths = synthetic_split_paths(root, split, num_images, seed, image_size, version)
    folder = os.path.join(root, "mpii-r2-" + os.path.basename(paths["split_dir"]))
    val = split == "val"
    return {
        "json_file": os.path.join(folder, "valid.json" if val else "train.json"),
        "gt_mat_file": os.path.join(folder, "gt_valid.mat") if val else None,
        "image_root": paths["image_root"],
    }


def ensure_synthetic_mpii_split(
    root: str, split: str, num_images: int, seed: int, image_size: int, version: int = GENERATOR_VERSION
) -> Dict[str, Any]:
    """Makes (or reuses) the MPII files of a synthetic spec (generating the spec's COCO split
    with generator ``version`` first if needed); returns :func:`synthetic_mpii_paths`."""
    paths = synthetic_mpii_paths(root, split, num_images, seed, image_size, version)
    # The entry first, also when the MPII files exist: a deleted entry is generated again, a damaged
    # one is an error naming it (not "image ... does not exist" when training reads it).
    coco_json = ensure_synthetic_split(root, split, num_images, seed, image_size, version=version)
    if os.path.isfile(paths["json_file"]):
        return paths
    with open(coco_json) as f:
        coco = json.load(f)
    entries, head_boxes, stats = _convert(coco, keep_without_head_box=split != "val")
    os.makedirs(os.path.dirname(paths["json_file"]), exist_ok=True)
    if paths["gt_mat_file"]:
        _write_gt_mat(paths["gt_mat_file"], entries, head_boxes)
    atomic_write(paths["json_file"], lambda f: f.write(json.dumps(entries).encode()))
    logger.info(
        "Synthetic MPII %(split)s split %(json)s: %(persons)d persons; dropped %(dropped_without_head_box)d without a "
        "head box; %(joints_outside_image)d derived joints outside the image left unlabelled.",
        {**stats, "split": split, "json": paths["json_file"]},
    )
    return paths


def register_synthetic_mpii_datasets(
    root: str, num_train: int, num_val: int, seed: int, image_size: int, version: int = GENERATOR_VERSION
) -> None:
    """(Re)registers ``synthetic_mpii_train`` / ``_val`` (the persons of generator ``version``);
    files are made on the first ``DatasetCatalog.get``. ``root`` as resolved by ``resolve_synthetic_root``."""
    for split, num_images in (("train", num_train), ("val", num_val)):
        spec = (root, split, int(num_images), int(seed), int(image_size), int(version))
        paths = synthetic_mpii_paths(*spec)
        register_mpii(
            SYNTHETIC_MPII_DATASET_NAMES[split],
            paths["json_file"],
            paths["image_root"],
            paths["gt_mat_file"],
            prepare=lambda spec=spec: ensure_synthetic_mpii_split(*spec),
        )
