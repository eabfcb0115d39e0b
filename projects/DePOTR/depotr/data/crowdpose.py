"""CrowdPose (Li et al. 2019): COCO-format files with 14 keypoints and a crowd index per image.

``crowdpose_train`` / ``_val`` / ``_trainval`` / ``_test`` are registered (lazily) from
``$DETECTRON2_DATASETS/crowdpose/{images, json/crowdpose_<split>.json}`` with the keypoints of
``CROWDPOSE_KEYPOINT_TABLE`` and ``evaluator_type`` "crowdpose" (AP easy / medium / hard).
"""

import os
from typing import Optional

from .custom import register_keypoint_dataset
from .keypoint_metadata import CROWDPOSE_KEYPOINT_TABLE, CROWDPOSE_SKELETON, flip_pairs

__all__ = ["CROWDPOSE_SPLITS", "register_crowdpose_datasets"]

CROWDPOSE_SPLITS = ("train", "val", "trainval", "test")


def register_crowdpose_datasets(root: Optional[str] = None) -> None:
    """Registers ``crowdpose_<split>`` for each split under ``root`` (default
    ``$DETECTRON2_DATASETS/crowdpose``, that defaulting to ``datasets``)."""
    root = root or os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "crowdpose")
    for split in CROWDPOSE_SPLITS:
        register_keypoint_dataset(
            f"crowdpose_{split}",
            os.path.join(root, "json", f"crowdpose_{split}.json"),
            os.path.join(root, "images"),
            keypoint_names=[row[0] for row in CROWDPOSE_KEYPOINT_TABLE],
            flip_map=flip_pairs(CROWDPOSE_KEYPOINT_TABLE),
            skeleton=CROWDPOSE_SKELETON,
            oks_sigmas=[row[2] for row in CROWDPOSE_KEYPOINT_TABLE],
            evaluator_type="crowdpose",
        )
