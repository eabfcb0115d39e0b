"""DePOTR data: keypoint metadata, the synthetic dataset, registrations, mapper (photometric augmentation).

Importing this package registers ``synthetic_persons_train`` / ``synthetic_persons_val``
(default ``DATASETS.SYNTHETIC`` values; images are generated on the first
``DatasetCatalog.get``) and adds OKS sigmas to Detectron2's ``keypoints_coco_*`` metadata.
Entry points re-register the synthetic datasets with their config:
``register_synthetic_datasets_from_cfg(cfg)``.
"""

from .dataset_mapper import DePOTRDatasetMapper, annotations_to_arrays, build_photometric_augmentation
from .datasets import (
    SYNTHETIC_DATASET_NAMES,
    add_coco_keypoint_metadata,
    attach_precomputed_boxes,
    attach_precomputed_boxes_from_cfg,
    filter_person_annotations,
    keypoint_oks_sigmas,
    load_precomputed_boxes,
    register_default_synthetic_datasets,
    register_synthetic_datasets,
    register_synthetic_datasets_from_cfg,
    resolve_synthetic_root,
)
from .keypoint_metadata import coco_person_metadata, flip_indices, flip_pairs
from .subset import select_subset, subset_coco, visibility_distribution
from .synthetic import render_synthetic_image
from .synthetic_cache import ensure_synthetic_split, generate_synthetic_split

register_default_synthetic_datasets()
add_coco_keypoint_metadata()

__all__ = [
    "DePOTRDatasetMapper",
    "SYNTHETIC_DATASET_NAMES",
    "add_coco_keypoint_metadata",
    "annotations_to_arrays",
    "attach_precomputed_boxes",
    "attach_precomputed_boxes_from_cfg",
    "build_photometric_augmentation",
    "coco_person_metadata",
    "ensure_synthetic_split",
    "filter_person_annotations",
    "flip_indices",
    "flip_pairs",
    "generate_synthetic_split",
    "keypoint_oks_sigmas",
    "load_precomputed_boxes",
    "register_synthetic_datasets",
    "register_synthetic_datasets_from_cfg",
    "render_synthetic_image",
    "resolve_synthetic_root",
    "select_subset",
    "subset_coco",
    "visibility_distribution",
]
