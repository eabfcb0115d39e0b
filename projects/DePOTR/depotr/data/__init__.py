"""DePOTR data: keypoint metadata, the synthetic dataset, registrations, mapper (photometric augmentation).

Importing this package registers ``synthetic_persons_train`` / ``synthetic_persons_val`` and
``synthetic_persons_v<k>_train`` / ``_val`` of every generator version k, and
``synthetic_mpii_train`` / ``_val`` (default ``DATASETS.SYNTHETIC`` values; images are generated
on the first ``DatasetCatalog.get``), ``mpii_train`` / ``mpii_val`` and ``crowdpose_*`` (files
read on the first ``DatasetCatalog.get``). OKS sigmas are not dataset metadata: they come with the
keypoints of the config (``keypoint_metadata.keypoint_metadata_from_config``). Your own keypoints:
:func:`register_keypoint_dataset`.
Entry points re-register the synthetic datasets with their config:
``register_synthetic_datasets_from_cfg(cfg)``.
"""

from .crowdpose import register_crowdpose_datasets
from .custom import drawing_metadata, fill_keypoint_config, register_keypoint_dataset
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
