"""Dataset dict -> model input for DePOTR (top-down): the whole image, N person boxes with K
keypoints, M precomputed person boxes.

Keypoint coordinates follow Detectron2: ``load_coco_json`` adds 0.5 to COCO's pixel indices (pixel
i's centre is i + 0.5, the continuous convention of boxes and RoIAlign) and ``COCOEvaluator``
subtracts it again; the mapper keeps them as they are and only zeroes x, y where v = 0. A keypoint
is inside the image when 0 <= x <= W and 0 <= y <= H (``transform_keypoint_annotations``).

Training augmentation here is photometric only; all geometry is applied per person at crop time
by the model (``depotr.modeling.crop_augmentation``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import albumentations as A
import numpy as np
import torch
from PIL import Image

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, BoxMode, Instances, Keypoints

from ..cli import ConfigError
from .image_io import read_image_bgr
from .keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES

logger = logging.getLogger(__name__)

__all__ = ["DePOTRDatasetMapper", "annotations_to_arrays", "build_photometric_augmentation"]


def build_photometric_augmentation(
    blur_prob: float = 0.1, rgb_shift_prob: float = 0.2, brightness_contrast_prob: float = 0.3
) -> A.Compose:
    """GaussianBlur, RGBShift, RandomBrightnessContrast (Albumentations defaults), each with its
    probability, on the (H, W, C) uint8 image only."""
    return A.Compose(
        [
            A.GaussianBlur(p=blur_prob),
            A.RGBShift(p=rgb_shift_prob),
            A.RandomBrightnessContrast(p=brightness_contrast_prob),
        ]
    )


def annotations_to_arrays(
    annos: Sequence[Dict[str, Any]], num_keypoints: int, file_name: str = "?"
) -> Tuple[np.ndarray, np.ndarray]:
    """Validates the non-crowd annotations and stacks them.

    Returns:
        boxes: float32 (N, 4) XYXY_ABS. keypoints: float32 (N, K, 3) x, y, v (x = y = 0 where
        v = 0; all zeros when an annotation has no keypoints).
    Raises:
        ValueError naming the annotation id and file: degenerate box (w or h <= 0 or not
        finite), keypoints not 3K finite numbers, visibility not in {0, 1, 2}.
    """
    boxes, kps = [], []
    for i, anno in enumerate(annos):
        if anno.get("iscrowd", 0):
            continue
        where = f"annotation id {anno['id']}" if "id" in anno else f"annotation #{i} (no id)"
        where += f" of {file_name}"
        bbox = np.asarray(BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS), np.float64)
        if bbox.shape != (4,) or not np.isfinite(bbox).all() or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
            raise ValueError(f"degenerate box {list(anno['bbox'])} (width or height <= 0) in {where}")
        raw = anno.get("keypoints")
        try:
            kp = np.zeros(3 * num_keypoints) if raw is None else np.array(raw, np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"malformed keypoints in {where}: {e}") from e
        error = ""
        if kp.size != 3 * num_keypoints:
            error = f"expected {3 * num_keypoints} values (x, y, v for {num_keypoints} keypoints), got {kp.size}"
        elif not np.isfinite(kp).all():
            error = "NaN or inf"
        elif not np.isin(kp[2::3], (0, 1, 2)).all():
            error = f"visibility must be 0, 1 or 2, got {sorted(set(kp[2::3].tolist()))}"
        if error:
            raise ValueError(f"malformed keypoints in {where}: {error}")
        kp = kp.reshape(num_keypoints, 3)
        kp[kp[:, 2] == 0, :2] = 0
        boxes.append(bbox)
        kps.append(kp)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(kps, np.float32).reshape(-1, num_keypoints, 3)


class DePOTRDatasetMapper:
    """Reads the image, validates annotations (:func:`annotations_to_arrays`), applies the
    photometric training augmentation and builds ``Instances``; no geometry (the model crops).

    An unreadable image, or one whose size is not the dataset dict's ``height`` / ``width``, is
    skipped in training (None: Detectron2's ``MapDataset`` retries another index;
    ``num_skipped_images`` counts them per process, each logged) and an error naming it at
    evaluation (an OSError, a :class:`~depotr.cli.ConfigError` for the size).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        image_format: str = "BGR",
        augmentation: Optional[A.Compose] = None,
        num_keypoints: int = len(COCO_PERSON_KEYPOINT_NAMES),
    ):
        """
        Args:
            is_train: training (augmentation, unreadable or wrongly sized images skipped) or evaluation.
            image_format: ``cfg.INPUT.FORMAT`` ("BGR", "RGB", ...).
            augmentation: a pixel-only Albumentations pipeline, used only when ``is_train``; seeded
                per call from NumPy's global RNG (seeded per worker and per iteration by
                ``IterationSeedHook``), so a resumed run augments like an uninterrupted one.
            num_keypoints: K.
        """
        self.is_train = is_train
        self.image_format = image_format
        self.num_keypoints = num_keypoints
        self.augmentation = augmentation if is_train else None
        self.num_skipped_images = 0
        augmentation = "off" if self.augmentation is None else self.augmentation
        logger.info(f"DePOTRDatasetMapper ({'train' if is_train else 'test'}): augmentation {augmentation}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        aug = cfg.INPUT.AUG
        probs = (aug.BLUR_PROB, aug.RGB_SHIFT_PROB, aug.BRIGHTNESS_CONTRAST_PROB)
        augmentation = build_photometric_augmentation(*probs) if is_train and aug.ENABLED else None
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "augmentation": augmentation,
            "num_keypoints": cfg.MODEL.DEPOTR.NUM_KEYPOINTS,
        }

    def _read_image(self, file_name: str) -> Optional[np.ndarray]:
        """The image (H, W, C) uint8 in ``image_format``, decoded as the ``Predictor`` does
        (:func:`~depotr.data.image_io.read_image_bgr`: 16-bit images scaled to 8 bits, grey repeated,
        alpha dropped); None for an unreadable training image."""
        try:
            image = read_image_bgr(file_name)
        except (OSError, ValueError, SyntaxError) as e:
            if not self.is_train:
                raise OSError(f"cannot read image {file_name}: {e}") from e
            self._count_skip(f"unreadable image {file_name} ({type(e).__name__}: {e})")
            return None
        if self.image_format == "BGR":
            return image
        return utils.convert_PIL_to_numpy(Image.fromarray(image[:, :, ::-1]), self.image_format)

    def _count_skip(self, reason: str) -> None:
        """Counts a skipped training image and logs ``reason`` with the running count."""
        self.num_skipped_images += 1
        logger.warning(f"Skipping {reason}; {self.num_skipped_images} skipped so far in this process.")

    def _check_image_size(self, dataset_dict: Dict[str, Any], image: np.ndarray) -> bool:
        """Whether the (H, W, C) ``image`` has the dict's ``height`` and ``width`` (Detectron2's
        ``check_image_size``; absent ones are set from the image). False (a counted skip) for a
        training image of another size.

        Raises:
            ConfigError naming the file and both sizes, for an evaluation image of another size.
        """
        height, width = image.shape[:2]
        dataset_dict.setdefault("height", height)
        dataset_dict.setdefault("width", width)
        expected = (dataset_dict["width"], dataset_dict["height"])
        if expected == (width, height):
            return True
        problem = (
            f"image {dataset_dict['file_name']} is {width}x{height} (width x height) but its dataset entry "
            f"says {expected[0]}x{expected[1]}"
        )
        if not self.is_train:
            raise ConfigError(f"{problem}: correct the width/height in the dataset json")
        self._count_skip(problem)
        return False

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """
        Returns None for a skipped training image (unreadable, or not of the dict's size), else a dict with:
            image: uint8 (C, H, W) tensor in ``image_format``, the whole image.
            height, width: original image size. image_id, file_name: from the dataset dict.
            instances (when the dict has annotations; crowd ones dropped): ``Instances`` with
                gt_boxes (Boxes (N, 4) XYXY_ABS), gt_classes (int64 (N,) zeros), gt_keypoints
                (Keypoints (N, K, 3): x, y in image pixels (Detectron2 convention, see module
                doc), v; v = 0 -> x = y = 0).
            proposals (when the dict has ``person_boxes``): ``Instances`` with proposal_boxes
                (Boxes (M, 4) XYXY_ABS) and scores (float32 (M,)).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        image = self._read_image(file_name)
        if image is None or not self._check_image_size(dataset_dict, image):
            return None

        annos = dataset_dict.pop("annotations", None)
        boxes, keypoints = annotations_to_arrays(annos or [], self.num_keypoints, file_name)
        proposal_boxes = proposal_scores = None
        if "person_boxes" in dataset_dict:
            proposal_boxes = np.asarray(dataset_dict.pop("person_boxes"), np.float32).reshape(-1, 4)
            proposal_scores = np.asarray(dataset_dict.pop("person_scores"), np.float32).reshape(-1)
            if len(proposal_scores) != len(proposal_boxes):
                raise ValueError(
                    f"{file_name}: {len(proposal_boxes)} person_boxes but {len(proposal_scores)} person_scores"
                )

        if self.augmentation is not None:
            self.augmentation.set_random_seed(int(np.random.randint(2**31)))
            image = self.augmentation(image=image)["image"]

        image_size = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if annos is not None:
            dataset_dict["instances"] = Instances(
                image_size,
                gt_boxes=Boxes(torch.from_numpy(boxes)),
                gt_classes=torch.zeros(len(boxes), dtype=torch.int64),
                gt_keypoints=Keypoints(torch.from_numpy(keypoints)),
            )
        if proposal_boxes is not None:
            dataset_dict["proposals"] = Instances(
                image_size,
                proposal_boxes=Boxes(torch.from_numpy(proposal_boxes)),
                scores=torch.from_numpy(proposal_scores),
            )
        return dataset_dict
