"""MPII Human Pose (Andriluka et al. 2014) for top-down training and PCKh evaluation, from HRNet's /
mmpose's files (layout: docs/datasets.md): ``annot/{train,valid}.json`` (per person: image, center,
scale, joints (16, 2), joints_vis; 1-based pixel indices) and ``annot/gt_valid.mat`` (the official
ground truth). Boxes and keypoints are made Detectron2's continuous pixel coordinates, as
``load_coco_json`` makes COCO's (pixel index i, 0-based, has its centre at i + 0.5: 1-based i is
i - 0.5), so that crops, flips and the evaluators treat them as every other dataset's.
Keypoints: v = 2 where ``joints_vis`` is 1, else x = y = v = 0.
"""

import logging
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..cli import ConfigError
from ..file_io import is_finite_number, load_json_list
from .custom import unregister_dataset
from .keypoint_metadata import MPII_KEYPOINT_NAMES, mpii_person_metadata

logger = logging.getLogger(__name__)

__all__ = ["MPII_SPLITS", "load_mpii_json", "mpii_box", "register_mpii", "register_mpii_datasets"]

NUM_JOINTS = len(MPII_KEYPOINT_NAMES)
# Registered name -> (annotation json, official ground truth .mat or None), relative to the root.
MPII_SPLITS: Dict[str, tuple] = {
    "mpii_train": ("annot/train.json", None),
    "mpii_val": ("annot/valid.json", "annot/gt_valid.mat"),
}


def mpii_box(center, scale: float) -> List[float]:
    """The XYWH_ABS person box (continuous pixels) of a 1-based MPII ``center`` (2,) and ``scale``: HRNet's
    (``lib/dataset/mpii.py``) centre y + 15 x scale and scale x 1.25 (skipped where the centre's x
    is -1), then the square of side 200 x scale around the centre (HRNet crops exactly that, so
    the MPII configs set ``INPUT.CROP_PADDING`` 1.0)."""
    cx, cy = float(center[0]), float(center[1])
    if cx != -1:
        cy += 15 * scale
        scale *= 1.25
    side = 200.0 * scale
    return [cx - 0.5 - side / 2, cy - 0.5 - side / 2, side, side]


def _numbers(value: Any) -> np.ndarray:
    """``value`` (json numbers, nested lists) as a float64 array; an empty one when it holds anything
    else (strings, which NumPy would parse, None, ragged lists)."""
    array = np.asarray(value, dtype=object)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in array.reshape(-1)):
        return np.zeros(0)
    return array.astype(np.float64)


def _person_annotation(entry: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The Detectron2 annotation of one MPII ``entry``; a ConfigError naming ``where`` and the field."""
    for field in ("image", "center", "scale"):
        if field not in entry:
            raise ConfigError(f"{where}: missing field {field!r}")
    if not isinstance(entry["image"], str) or not entry["image"]:
        raise ConfigError(f"{where}: field 'image' is {entry['image']!r}, expected an image file name")
    center = _numbers(entry["center"])
    if center.shape != (2,) or not np.isfinite(center).all():
        raise ConfigError(f"{where}: field 'center' must be 2 finite numbers, got {entry['center']!r}")
    scale = entry["scale"]
    if not is_finite_number(scale) or scale <= 0:
        raise ConfigError(f"{where}: field 'scale' must be a positive number, got {scale!r}")
    keypoints = np.zeros((NUM_JOINTS, 3))
    if "joints" in entry:
        joints, visible = _numbers(entry["joints"]), _numbers(entry.get("joints_vis", [])).reshape(-1)
        if joints.size == 0 or not np.isfinite(joints).all():
            raise ConfigError(
                f"{where}: field 'joints' must be finite numbers (x, y per joint), got {entry['joints']!r}"
            )
        if visible.size == 0 or not np.isfinite(visible).all():
            raise ConfigError(
                f"{where}: field 'joints_vis' must be {NUM_JOINTS} numbers, got {entry.get('joints_vis')!r}"
            )
        if joints.shape != (NUM_JOINTS, 2):
            raise ConfigError(f"{where}: field 'joints' has shape {joints.shape}, expected ({NUM_JOINTS}, 2)")
        if visible.shape != (NUM_JOINTS,):
            raise ConfigError(f"{where}: field 'joints_vis' has {visible.size} values, expected {NUM_JOINTS}")
        labelled = visible > 0
        keypoints[labelled, :2] = joints[labelled] - 0.5
        keypoints[labelled, 2] = 2
    return {
        "bbox": mpii_box(center, float(scale)),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": 0,
        "keypoints": keypoints.ravel().tolist(),
    }


def load_mpii_json(json_file: str, image_root: str) -> List[Dict[str, Any]]:
    """Detectron2 dataset dicts (one per image, persons in the file's order) of an MPII
    annotation json; each annotation's ``person_index`` is its position in the file (its column
    in the ground truth .mat). Image sizes come from the image headers.

    Raises:
        ConfigError (a ValueError: ``train_net.py`` prints it as one ``error:`` line) naming a
        missing file or image, or the file, the entry and the malformed field.
    """
    entries = load_json_list(json_file, "MPII annotation", "persons")
    images: Dict[str, Dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        where = f"MPII annotation file {json_file}, entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object, got {type(entry).__name__}")
        annotation = _person_annotation(entry, where)
        annotation["person_index"] = i
        image = entry["image"]
        if image not in images:
            file_name = os.path.join(image_root, image)
            if not os.path.isfile(file_name):
                raise ConfigError(f"{where}: image {file_name} does not exist")
            with Image.open(file_name) as im:
                width, height = im.size
            images[image] = dict(file_name=file_name, image_id=len(images), height=height, width=width, annotations=[])
        images[image]["annotations"].append(annotation)
    logger.info("Loaded %d MPII persons in %d images from %s", len(entries), len(images), json_file)
    return list(images.values())


def register_mpii(
    name: str,
    json_file: str,
    image_root: str,
    gt_mat_file: Optional[str] = None,
    prepare: Optional[Callable[[], Any]] = None,
) -> None:
    """Registers an MPII annotation json as dataset ``name`` (replacing an earlier one), with
    MPII's keypoint metadata, ``evaluator_type`` "mpii_pckh" and the official ground truth
    ``gt_mat_file`` of the same persons in the same order, if any. ``prepare``: called before each
    load (e.g. to write generated files)."""
    unregister_dataset(name)

    def load() -> List[Dict[str, Any]]:
        if prepare is not None:
            prepare()
        return load_mpii_json(json_file, image_root)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        gt_mat_file=gt_mat_file,
        evaluator_type="mpii_pckh",
        keypoints_from_dataset=True,  # depotr.data.custom.fill_keypoint_config
        **mpii_person_metadata(),
    )


def register_mpii_datasets(root: Optional[str] = None) -> None:
    """Registers ``mpii_train`` / ``mpii_val`` under ``root`` (default
    ``$DETECTRON2_DATASETS/mpii``, ``DETECTRON2_DATASETS`` defaulting to ``datasets``)."""
    root = root or os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "mpii")
    for name, (json_file, gt_mat_file) in MPII_SPLITS.items():
        register_mpii(
            name,
            os.path.join(root, json_file),
            os.path.join(root, "images"),
            os.path.join(root, gt_mat_file) if gt_mat_file else None,
        )
