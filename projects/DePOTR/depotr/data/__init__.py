"""DePOTR data: keypoint metadata, datasets, the mapper.

Importing this package registers the synthetic datasets (default ``DATASETS.SYNTHETIC``; entry
points re-register them with ``register_synthetic_datasets_from_cfg(cfg)``), ``mpii_*`` and
``crowdpose_*``; files are read on the first ``DatasetCatalog.get``. Your own keypoints:
:func:`register_keypoint_dataset`.
"""

from .crowdpose import register_crowdpose_datasets
from .custom import (
    check_datasets_registered,
    check_keypoint_count,
    drawing_metadata,
    fill_keypoint_config,
    register_keypoint_dataset,
)
from .dataset_mapper import DePOTRDatasetMapper, annotations_to_arrays, build_photometric_augmentation
from .datasets import (
    SYNTHETIC_DATASET_NAMES,
    attach_precomputed_boxes,
    attach_precomputed_boxes_from_cfg,
    filter_person_annotations,
    load_precomputed_boxes,
    register_default_synthetic_datasets,
    register_synthetic_datasets,
    register_synthetic_datasets_from_cfg,
    resolve_synthetic_root,
)
from .keypoint_metadata import coco_person_metadata, flip_indices, flip_pairs
from .mpii import register_mpii, register_mpii_datasets
from .subset import select_subset, subset_coco, visibility_distribution
from .synthetic import render_synthetic_image
from .synthetic_cache import ensure_synthetic_split, generate_synthetic_split

register_default_synthetic_datasets()
register_mpii_datasets()
register_crowdpose_datasets()

__all__ = [
    "DePOTRDatasetMapper",
    "SYNTHETIC_DATASET_NAMES",
    "annotations_to_arrays",
    "attach_precomputed_boxes",
    "attach_precomputed_boxes_from_cfg",
    "build_photometric_augmentation",
    "check_datasets_registered",
    "check_keypoint_count",
    "coco_person_metadata",
    "drawing_metadata",
    "ensure_synthetic_split",
    "fill_keypoint_config",
    "filter_person_annotations",
    "flip_indices",
    "flip_pairs",
    "generate_synthetic_split",
    "load_precomputed_boxes",
    "register_crowdpose_datasets",
    "register_keypoint_dataset",
    "register_mpii",
    "register_mpii_datasets",
    "register_synthetic_datasets",
    "register_synthetic_datasets_from_cfg",
    "render_synthetic_image",
    "resolve_synthetic_root",
    "select_subset",
    "subset_coco",
    "visibility_distribution",
]
