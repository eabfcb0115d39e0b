"""Dataset registrations and dataset-dict helpers for person keypoints (N persons per image): the
synthetic datasets (generated on the first ``DatasetCatalog.get``, :mod:`depotr.data.synthetic_cache`),
the training filter, and person detections from a COCO results json (Detectron2's
``load_proposals_into_dataset`` reads its own pkl instead). Score threshold, top-k, sorting and
clipping of those boxes are the box source's (``depotr.modeling.box_sources``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..cli import ConfigError
from ..file_io import is_finite_number, load_json_list
from .custom import unregister_dataset
from .keypoint_metadata import coco_person_metadata
from .synthetic import DEFAULT_IMAGE_SIZE
from .synthetic import GENERATOR_VERSION as DEFAULT_GENERATOR_VERSION
from .synthetic_cache import RENDERERS, check_generator_version, ensure_synthetic_split, synthetic_split_paths
from .synthetic_mpii import register_synthetic_mpii_datasets

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHETIC_DATASET_NAMES",
    "attach_precomputed_boxes",
    "attach_precomputed_boxes_from_cfg",
    "filter_person_annotations",
    "load_precomputed_boxes",
    "register_synthetic_datasets",
    "register_default_synthetic_datasets",
    "register_synthetic_datasets_from_cfg",
    "resolve_builtin_dataset_path",
    "resolve_synthetic_root",
]

# Split -> registered dataset name.
SYNTHETIC_DATASET_NAMES: Dict[str, str] = {"train": "synthetic_persons_train", "val": "synthetic_persons_val"}


def resolve_synthetic_root(root: str) -> str:
    """Absolute folder of ``DATASETS.SYNTHETIC.ROOT``; ``$DEPOTR_DATASETS``, when set, replaces its
    parent (as ``DETECTRON2_DATASETS`` does for the builtin datasets)."""
    env = os.environ.get("DEPOTR_DATASETS")
    if env:
        root = os.path.join(os.path.expanduser(env), os.path.basename(os.path.normpath(root)))
    return os.path.abspath(os.path.expanduser(root))


def _load_synthetic_split(
    name: str,
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: int,
    version: int = DEFAULT_GENERATOR_VERSION,
) -> List[Dict[str, Any]]:
    json_file = ensure_synthetic_split(root, split, num_images, seed, image_size, version=version)
    image_root = synthetic_split_paths(root, split, num_images, seed, image_size, version)["image_root"]
    # "id" is kept so that errors can name the annotation.
    return load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])


def register_synthetic_datasets(
    root: str,
    num_train: int,
    num_val: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    version: int = DEFAULT_GENERATOR_VERSION,
) -> None:
    """(Re)registers ``synthetic_persons_train`` / ``_val`` (generator ``version``),
    ``synthetic_persons_v<k>_train`` / ``_val`` (every generator version k) and
    ``synthetic_mpii_train`` / ``_val`` (generator ``version``). Cheap: images are generated (or a
    complete cache reused) on the first ``DatasetCatalog.get``.

    Args:
        root: ``DATASETS.SYNTHETIC.ROOT`` (see :func:`resolve_synthetic_root`).
        num_train, num_val: images per split; seed: ``DATASETS.SYNTHETIC.SEED``.
        image_size: side S of the square images; version: ``DATASETS.SYNTHETIC.GENERATOR_VERSION``.
    """
    root = resolve_synthetic_root(root)
    version = check_generator_version(version)
    sizes = {"train": int(num_train), "val": int(num_val)}
    entries = [(SYNTHETIC_DATASET_NAMES[split], split, version) for split in sizes]
    entries += [(f"synthetic_persons_v{k}_{split}", split, k) for k in sorted(RENDERERS) for split in sizes]
    for name, split, k in entries:
        args = (name, root, split, sizes[split], int(seed), int(image_size), k)
        paths = synthetic_split_paths(*args[1:])  # first: a bad spec raises before the catalog changes
        unregister_dataset(name)
        DatasetCatalog.register(name, lambda args=args: _load_synthetic_split(*args))
        MetadataCatalog.get(name).set(
            json_file=paths["json_file"],
            image_root=paths["image_root"],
            evaluator_type="coco",
            **coco_person_metadata(),
        )
    register_synthetic_mpii_datasets(root, num_train, num_val, seed, image_size, version)


def register_synthetic_datasets_from_cfg(cfg) -> None:
    """:func:`register_synthetic_datasets` with ``cfg.DATASETS.SYNTHETIC``."""
    syn = cfg.DATASETS.SYNTHETIC
    register_synthetic_datasets(
        syn.ROOT, syn.NUM_TRAIN_IMAGES, syn.NUM_VAL_IMAGES, syn.SEED, version=syn.GENERATOR_VERSION
    )


def register_default_synthetic_datasets() -> None:
    """:func:`register_synthetic_datasets` with the default ``DATASETS.SYNTHETIC`` values."""
    from detectron2.config import get_cfg

    from ..config import add_depotr_config

    cfg = get_cfg()
    add_depotr_config(cfg)
    register_synthetic_datasets_from_cfg(cfg)


def resolve_builtin_dataset_path(path: str) -> str:
    """``path`` with a leading ``datasets/`` (Detectron2's default dataset root) replaced by
    ``$DETECTRON2_DATASETS`` when that is set, as the builtin COCO datasets are found: the COCO
    configs' ``DATASETS.PRECOMPUTED_BOXES`` then sits beside ``$DETECTRON2_DATASETS/coco``. Other
    paths are returned as they are."""
    env = os.environ.get("DETECTRON2_DATASETS")
    parts = os.path.normpath(path).split(os.sep)
    if not env or os.path.isabs(path) or len(parts) < 2 or parts[0] != "datasets":
        return path
    return os.path.join(os.path.expanduser(env), *parts[1:])


def filter_person_annotations(
    dataset_dicts: Sequence[Dict[str, Any]], return_stats: bool = False
) -> Union[List[Dict[str, Any]], Tuple[List[Dict[str, Any]], Dict[str, int]]]:
    """Training filter: keeps non-crowd persons with >= 1 labelled keypoint (v > 0) and the images
    that still have one; logs the counts. Returns new dicts (other fields shared), with
    ``return_stats`` also the counts images_kept, images_dropped, persons_kept,
    persons_dropped_crowd, persons_dropped_no_keypoints."""
    stats = Counter(
        images_kept=0, images_dropped=0, persons_kept=0, persons_dropped_crowd=0, persons_dropped_no_keypoints=0
    )
    kept_dicts = []
    for d in dataset_dicts:
        kept = []
        for anno in d.get("annotations", []):
            if anno.get("iscrowd", 0):
                stats["persons_dropped_crowd"] += 1
            elif not any(v > 0 for v in list(anno.get("keypoints") or [])[2::3]):
                stats["persons_dropped_no_keypoints"] += 1
            else:
                kept.append(anno)
        stats["persons_kept"] += len(kept)
        stats["images_kept" if kept else "images_dropped"] += 1
        if kept:
            kept_dicts.append({**d, "annotations": kept})
    stats = dict(stats)
    logger.info(
        "Person filter: kept %(images_kept)d images, dropped %(images_dropped)d without persons; "
        "kept %(persons_kept)d persons, dropped %(persons_dropped_crowd)d crowd and "
        "%(persons_dropped_no_keypoints)d without labelled keypoints.",
        stats,
    )
    return (kept_dicts, stats) if return_stats else kept_dicts


def load_precomputed_boxes(
    json_file: str, category_id: int = 1
) -> Tuple[Dict[int, Tuple[np.ndarray, np.ndarray]], Dict[str, int]]:
    """Reads a COCO detection results json (a list of {image_id, category_id, bbox [x, y, w, h],
    score}) and keeps, per image and in the file's order, the boxes of ``category_id`` (COCO's
    person: 1) of positive width and height.

    Returns:
        boxes: image_id -> (boxes float32 (N, 4) XYXY_ABS, scores float32 (N,)).
        stats: total, kept, dropped_category, dropped_empty (w or h 0).
    Raises:
        ConfigError (a ValueError: ``train_net.py`` prints it as one ``error:`` line) naming the
        file (and detection index and field).
    """
    detections = load_json_list(json_file, "precomputed boxes", "detections (COCO results format)")
    stats = Counter(total=len(detections), kept=0, dropped_category=0, dropped_empty=0)
    per_image: Dict[int, List[Tuple[float, List[float]]]] = {}
    for i, det in enumerate(detections):
        where = f"precomputed boxes file {json_file}, detection {i}"
        if not isinstance(det, dict):
            raise ConfigError(f"{where}: expected an object, got {type(det).__name__}")
        missing = [field for field in ("image_id", "category_id", "bbox", "score") if field not in det]
        if missing:
            raise ConfigError(f"{where}: missing field '{missing[0]}'")
        bbox, score, image_id = det["bbox"], det["score"], det["image_id"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ConfigError(f"{where}: field 'image_id' must be an integer, got {image_id!r}")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_finite_number(v) for v in bbox):
            raise ConfigError(f"{where}: field 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if not is_finite_number(score):
            raise ConfigError(f"{where}: field 'score' must be a finite number, got {score!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ConfigError(f"{where}: degenerate box {bbox} (negative width or height)")
        if det["category_id"] != category_id:
            stats["dropped_category"] += 1
        elif bbox[2] == 0 or bbox[3] == 0:
            stats["dropped_empty"] += 1
        else:
            per_image.setdefault(image_id, []).append((float(score), [float(v) for v in bbox]))
            stats["kept"] += 1
    out = {}
    for image_id, dets in per_image.items():
        scores, xywh = zip(*dets)
        boxes = BoxMode.convert(np.asarray(xywh, np.float32), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        out[image_id] = (boxes.astype(np.float32), np.asarray(scores, np.float32))
    return out, dict(stats)


def attach_precomputed_boxes(
    dataset_dicts: Sequence[Dict[str, Any]], json_file: str, category_id: int = 1
) -> List[Dict[str, Any]]:
    """Adds ``person_boxes`` (float32 (N, 4) XYXY_ABS) and ``person_scores`` (float32 (N,)) of
    :func:`load_precomputed_boxes` (boxes of ``category_id``) to each dataset dict (N = 0 for
    images without detections). Returns new dicts; logs what was dropped and why. A ConfigError
    naming the file when it has no box of ``category_id`` on an image of the dataset (an empty
    list, or a file of another dataset or category), which would evaluate no person."""
    boxes, stats = load_precomputed_boxes(json_file, category_id)
    image_ids = {d["image_id"] for d in dataset_dicts}
    unknown = sum(len(b) for i, (b, _) in boxes.items() if i not in image_ids)
    if not stats["total"]:
        raise ConfigError(f"precomputed boxes file {json_file} holds no detections (an empty list)")
    if unknown == stats["kept"]:
        raise ConfigError(
            f"precomputed boxes file {json_file}: none of its {stats['total']} detections is a box of category_id "
            f"{category_id} on an image of the dataset ({stats['dropped_category']} of another category, "
            f"{stats['dropped_empty']} empty, {unknown} on image ids {sorted(boxes)[:3]}... where the dataset's "
            f"are {sorted(image_ids)[:3]}...): a file of another dataset?"
        )
    empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
    out = []
    for d in dataset_dicts:
        person_boxes, person_scores = boxes.get(d["image_id"], empty)
        out.append({**d, "person_boxes": person_boxes, "person_scores": person_scores})
    without = sum(1 for d in out if len(d["person_boxes"]) == 0)
    logger.info(
        f"Precomputed boxes {json_file}: {stats['total']} detections, kept {stats['kept'] - unknown}; dropped "
        f"{stats['dropped_category']} of another category than {category_id}, {stats['dropped_empty']} empty; "
        f"{unknown} kept boxes belong to images not in the dataset; {without} of {len(out)} images have no box."
    )
    return out


def attach_precomputed_boxes_from_cfg(
    cfg, dataset_name: str, dataset_dicts: Sequence[Dict[str, Any]]
) -> List[Dict[str, Any]]:
    """:func:`attach_precomputed_boxes` with the file of ``dataset_name`` in
    ``DATASETS.PRECOMPUTED_BOXES`` (its position in ``DATASETS.TEST``); the dicts unchanged when
    it has none or when ``MODEL.DEPOTR.TEST_BOX_SOURCE`` is not "precomputed" (the file is then
    not read: the COCO configs' detections file need not exist to evaluate with "gt" boxes). The
    boxes kept are those of the dataset's one category (its json's id, e.g. 3 for a custom
    keypoint file; COCO's person, 1, when the dataset has none or several)."""
    if cfg.MODEL.DEPOTR.TEST_BOX_SOURCE != "precomputed":
        return list(dataset_dicts)
    files, tests = cfg.DATASETS.PRECOMPUTED_BOXES, list(cfg.DATASETS.TEST)
    if files and len(files) != len(tests):
        raise ConfigError(
            f"DATASETS.PRECOMPUTED_BOXES has {len(files)} entries but DATASETS.TEST has "
            f'{len(tests)}: give one detections json (or "") per test dataset'
        )
    json_file = files[tests.index(dataset_name)] if files and dataset_name in tests else ""
    if not json_file:
        if dataset_dicts and not any("person_boxes" in d for d in dataset_dicts):
            raise ConfigError(
                f"MODEL.DEPOTR.TEST_BOX_SOURCE is 'precomputed' but DATASETS.PRECOMPUTED_BOXES names no detections "
                f"file for {dataset_name!r} and its dicts hold no person_boxes: give one COCO results json per "
                "DATASETS.TEST entry, or TEST_BOX_SOURCE 'gt' / 'detector' / 'whole_image'"
            )
        return list(dataset_dicts)
    json_file = resolve_builtin_dataset_path(json_file)
    json_ids = list(MetadataCatalog.get(dataset_name).get("thing_dataset_id_to_contiguous_id", {}))
    return attach_precomputed_boxes(dataset_dicts, json_file, json_ids[0] if len(json_ids) == 1 else 1)
