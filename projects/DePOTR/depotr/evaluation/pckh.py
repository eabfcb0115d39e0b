"""PCKh: the standard MPII evaluation (Andriluka et al. 2014), and a Detectron2 evaluator for it.

The computation is the official MATLAB toolkit's as HRNet's ``lib/dataset/mpii.py`` ``evaluate``
ports it, for P persons and MPII's 16 joints: predictions and ground truth in 1-based pixels
(predictions are written 0-based and get +1; the model's predictions and the dataset dicts'
keypoints are Detectron2's continuous coordinates, 0-based pixel index + 0.5, converted here as
``COCOEvaluator`` converts them); a labelled joint (not ``jnt_missing``) is correct
when its distance to the ground truth is at most ``threshold`` (0.5) x the head size, ``SC_BIAS``
(0.6) x the diagonal of the head box; PCKh of a joint = 100 x correct / labelled; the groups
Head (head top), Shoulder, ..., Ankle average left and right; Mean: the joints weighted by their
labelled counts, pelvis and thorax left out; Mean@0.1: the same at the threshold HRNet reports
under that name (``MEAN_LOW_THRESHOLD``, 0.11).

A person without a head box (a dataset that has none) is normalised by its box instead: PCK@0.2
of the box size max(w, h) (its "head size" is 0.4 x max(w, h), so that the 0.5 threshold is 0.2
of the box size); how many persons were is logged and reported (``NumBoxNormalised``).
"""

import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.io import loadmat, savemat
from scipy.io.matlab import MatReadError

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm

from ..data.keypoint_metadata import MPII_KEYPOINT_NAMES, MPII_OFFICIAL_JOINT_NAMES
from ..file_io import atomic_write

__all__ = [
    "MPIIGroundTruth",
    "PCKhEvaluator",
    "format_pckh_table",
    "load_mpii_gt_mat",
    "load_mpii_predictions_mat",
    "mean_pose_pckh_baseline",
    "pckh_table",
]

logger = logging.getLogger(__name__)

SC_BIAS = 0.6  # head size = SC_BIAS x head-box diagonal
PCKH_THRESHOLD = 0.5
# Detectron2's continuous pixel coordinate (model outputs, dataset dicts) minus a 0-based pixel index.
CONTINUOUS_OFFSET = 0.5
MEAN_LOW_THRESHOLD = float(np.arange(0, 0.5 + 0.01, 0.01)[11])  # HRNet's "Mean@0.1": index 11 of its thresholds
BOX_PCK_THRESHOLD = 0.2  # without a head box: PCK@BOX_PCK_THRESHOLD of max(w, h)
EXCLUDED_FROM_MEAN = ("pelv", "thor")  # joints left out of the means (official names)
# Reported groups: name -> official joint names averaged.
JOINT_GROUPS = {
    "Head": ("head",),
    "Shoulder": ("lsho", "rsho"),
    "Elbow": ("lelb", "relb"),
    "Wrist": ("lwri", "rwri"),
    "Hip": ("lhip", "rhip"),
    "Knee": ("lkne", "rkne"),
    "Ankle": ("lank", "rank"),
}


@dataclass
class MPIIGroundTruth:
    """Ground truth of P persons, in the official layout transposed to person-first.

    Attributes:
        joint_names: (16,) official joint names (``dataset_joints``), the order of the arrays.
        positions: float64 (P, 16, 2) 1-based pixel positions (``pos_gt_src``).
        missing: bool (P, 16) joint not labelled (``jnt_missing``).
        head_sizes: float64 (P,) the distance normaliser: SC_BIAS x head-box diagonal, or
            BOX_PCK_THRESHOLD / PCKH_THRESHOLD (0.4) x max(w, h) of the box where there is no head box.
        box_normalised: bool (P,) whose normaliser is the box.
    """

    joint_names: Sequence[str]
    positions: np.ndarray
    missing: np.ndarray
    head_sizes: np.ndarray
    box_normalised: np.ndarray


def head_sizes_from_boxes(head_boxes: np.ndarray, box_sizes: Optional[np.ndarray] = None) -> np.ndarray:
    """(P,) normalisers from head boxes (P, 2, 2) [[x1, y1], [x2, y2]] (NaN rows: none), falling
    back to ``box_sizes`` (P,) max(w, h) where a head box is NaN."""
    sizes = SC_BIAS * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=1)
    missing = ~np.isfinite(sizes)
    if missing.any():
        if box_sizes is None:
            raise ValueError(f"{int(missing.sum())} persons have no head box and no box size to fall back to")
        sizes = np.where(missing, BOX_PCK_THRESHOLD / PCKH_THRESHOLD * np.asarray(box_sizes, np.float64), sizes)
    return sizes


def _mat_strings(array: np.ndarray) -> List[str]:
    """The strings of a MATLAB cell array of strings as ``scipy.io.loadmat`` returns it."""
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(array, dtype=object).ravel()]


def _read_mat(path: str, what: str) -> Dict[str, Any]:
    """``loadmat(path)``; a ValueError naming ``what`` and ``path`` when that is no readable .mat file."""
    try:
        return loadmat(path)
    except (OSError, ValueError, MatReadError) as e:  # MatReadError: e.g. a text file ("appears to be truncated")
        raise ValueError(f"{what} {path}: cannot read it as a .mat file ({e})") from e


def load_mpii_gt_mat(path: str) -> MPIIGroundTruth:
    """Reads the official ``gt_valid.mat`` (``dataset_joints`` (1, 16) cell, ``jnt_missing``
    (16, P), ``pos_gt_src`` (16, 2, P), ``headboxes_src`` (2, 2, P)). Raises a ValueError naming
    the file and the field that is missing or has another shape."""
    mat = _read_mat(path, "MPII ground truth")
    for field in ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src"):
        if field not in mat:
            raise ValueError(f"MPII ground truth {path}: no field {field!r}")
    names = _mat_strings(mat["dataset_joints"])
    if sorted(names) != sorted(MPII_OFFICIAL_JOINT_NAMES):
        raise ValueError(f"MPII ground truth {path}: dataset_joints {names} are not MPII's 16 joints")
    missing, positions, head_boxes = mat["jnt_missing"], mat["pos_gt_src"], mat["headboxes_src"]
    num_persons = missing.shape[-1] if missing.ndim == 2 else -1
    for field, array, shape in (
        ("jnt_missing", missing, (16, num_persons)),
        ("pos_gt_src", positions, (16, 2, num_persons)),
        ("headboxes_src", head_boxes, (2, 2, num_persons)),
    ):
        if array.shape != shape:
            raise ValueError(f"MPII ground truth {path}: {field} has shape {array.shape}, expected {shape}")
    head_boxes = np.transpose(head_boxes, (2, 0, 1)).astype(np.float64)
    return MPIIGroundTruth(
        joint_names=names,
        positions=np.transpose(positions, (2, 0, 1)).astype(np.float64),
        missing=np.asarray(missing, bool).T,
        head_sizes=head_sizes_from_boxes(head_boxes),
        box_normalised=np.zeros(num_persons, bool),
    )


def load_mpii_predictions_mat(path: str, num_persons: int) -> np.ndarray:
    """``preds`` (P, 16, 2) of a pred.mat (0-based pixels, as HRNet writes it), as float64.
    Raises a ValueError naming the file when the field is missing or has another shape."""
    mat = _read_mat(path, "MPII predictions")
    if "preds" not in mat:
        raise ValueError(f"MPII predictions {path}: no field 'preds'")
    preds = np.asarray(mat["preds"], np.float64)
    if preds.shape[:2] != (num_persons, 16) or preds.ndim != 3 or preds.shape[2] < 2:
        raise ValueError(f"MPII predictions {path}: preds has shape {preds.shape}, expected ({num_persons}, 16, 2)")
    return preds[:, :, :2]


def _pck(scaled_errors: np.ndarray, labelled: np.ndarray, threshold: float) -> np.ndarray:
    """(16,) 100 x fraction of the labelled joints within ``threshold``; NaN where none is."""
    correct = ((scaled_errors <= threshold) & labelled).sum(axis=0)
    counts = labelled.sum(axis=0)
    return np.divide(100.0 * correct, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def pckh_table(preds: np.ndarray, gt: MPIIGroundTruth) -> Dict[str, float]:
    """PCKh of 0-based predictions ``preds`` (P, 16, 2) (in ``gt.joint_names`` order; NaN: no
    prediction, counted wrong) against ``gt``.

    Returns, in this order: the 7 groups, Mean, Mean@0.1 (see the module docstring), each in %,
    and NumPersons, NumBoxNormalised.
    """
    if preds.shape != gt.positions.shape:
        raise ValueError(f"predictions have shape {preds.shape}, the ground truth {gt.positions.shape}")
    errors = np.linalg.norm(preds + 1.0 - gt.positions, axis=2)  # (P, 16), predictions made 1-based
    scaled = errors / gt.head_sizes[:, None]
    labelled = ~gt.missing
    index = {name: i for i, name in enumerate(gt.joint_names)}
    in_mean = np.ones(len(gt.joint_names), bool)
    in_mean[[index[name] for name in EXCLUDED_FROM_MEAN]] = False
    counts = labelled.sum(axis=0)
    weights = np.where(in_mean & (counts > 0), counts, 0).astype(np.float64)
    weights /= weights.sum()
    pckh = _pck(scaled, labelled, PCKH_THRESHOLD)
    table = {group: float(np.mean([pckh[index[name]] for name in names])) for group, names in JOINT_GROUPS.items()}
    table["Mean"] = float(np.sum(np.nan_to_num(pckh) * weights))
    table["Mean@0.1"] = float(np.sum(np.nan_to_num(_pck(scaled, labelled, MEAN_LOW_THRESHOLD)) * weights))
    table["NumPersons"] = float(len(preds))
    table["NumBoxNormalised"] = float(gt.box_normalised.sum())
    return table


def format_pckh_table(table: Dict[str, float]) -> str:
    """The table as text: a header row and a value row (groups, Mean, Mean@0.1), then the line
    ``PCKh Mean@0.5 <x> Mean@0.1 <y>``."""
    columns = [*JOINT_GROUPS, "Mean", "Mean@0.1"]
    header = " | ".join(f"{c:>8}" for c in columns)
    values = " | ".join(f"{table[c]:8.3f}" for c in columns)
    return f"{header}\n{values}\nPCKh Mean@0.5 {table['Mean']:.3f} Mean@0.1 {table['Mean@0.1']:.3f}"


def _persons(dataset_dict: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The evaluated persons of a dataset dict: its non-crowd annotations."""
    return [a for a in dataset_dict.get("annotations", []) if not a.get("iscrowd", 0)]


def _ordered_persons(dataset_dicts: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], np.ndarray]:
    """The evaluated persons of all dicts in the dicts' order, and the evaluation order as (P,)
    indices into that list: by ``person_index`` (the position in the MPII file, as in the
    official .mat) where every person has one, else the dicts' order."""
    persons = [a for d in dataset_dicts for a in _persons(d)]
    keys = [a.get("person_index", -1) for a in persons]
    order = np.argsort(keys, kind="stable") if all(k >= 0 for k in keys) else np.arange(len(persons))
    return persons, order


def _xyxy(annos: Sequence[Dict[str, Any]]) -> np.ndarray:
    """(P, 4) float64 XYXY_ABS boxes of annotations."""
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
    return np.array(boxes, np.float64).reshape(-1, 4)


def _gt_from_dicts(dataset_dicts: Sequence[Dict[str, Any]], order: Sequence[int]) -> MPIIGroundTruth:
    """Ground truth from the dataset dicts' annotations (keypoints (3 x 16) in continuous pixels
    (as loaded, module docstring) in the dataset's keypoint order, ``head_box`` [x1, y1, x2, y2]
    where there is one (only its size counts), ``bbox``)
    in evaluation order; ``order``: official joint -> dataset keypoint index."""
    persons, person_order = _ordered_persons(dataset_dicts)
    persons = [persons[i] for i in person_order]
    kps = np.array([np.reshape(a["keypoints"], (-1, 3))[order] for a in persons], np.float64).reshape(-1, 16, 3)
    head_boxes = np.full((len(persons), 2, 2), np.nan)
    for p, anno in enumerate(persons):
        if anno.get("head_box") is not None:
            head_boxes[p] = np.reshape(anno["head_box"], (2, 2)) + 1.0
    boxes = _xyxy(persons)
    return MPIIGroundTruth(
        joint_names=MPII_OFFICIAL_JOINT_NAMES,
        positions=kps[:, :, :2] - CONTINUOUS_OFFSET + 1.0,
        missing=kps[:, :, 2] <= 0,
        head_sizes=head_sizes_from_boxes(head_boxes, np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])),
        box_normalised=~np.isfinite(head_boxes).all(axis=(1, 2)),
    )


def gather_on_main(items: List[Any], distributed: bool) -> Optional[List[Any]]:
    """An evaluator's ``items`` of all ranks, concatenated, on the main process (None on the
    others); ``items`` itself when not ``distributed``."""
    if not distributed:
        return items
    comm.synchronize()
    gathered = comm.gather(items, dst=0)
    return list(itertools.chain(*gathered)) if comm.is_main_process() else None


class PCKhEvaluator(DatasetEvaluator):
    """PCKh of a dataset with MPII's 16 keypoints (any order of the names), one prediction per
    ground-truth person (``MODEL.DEPOTR.TEST_BOX_SOURCE "gt"``).

    Each ground-truth person gets the prediction of its image whose box overlaps its box (clipped
    to the image, as the box source clips) most, IoU >= 0.5, one-to-one, greedily by IoU; persons
    left without one count every labelled joint wrong (logged). The ground truth is the dataset's
    metadata ``gt_mat_file`` (the official ``gt_valid.mat``, persons in evaluation order) when
    set, else the annotations (and their ``head_box``). With ``output_dir`` the predictions are
    written as HRNet's ``pred.mat`` (``preds`` (P, 16, 2), 0-based, official joint order).
    """

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None):
        metadata = MetadataCatalog.get(dataset_name)
        names = list(getattr(metadata, "keypoint_names", []))
        if sorted(names) != sorted(MPII_KEYPOINT_NAMES):
            raise ValueError(f"dataset {dataset_name!r}: PCKh needs MPII's 16 keypoints, keypoint_names is {names}")
        self._dataset_name = dataset_name
        self._order = [names.index(name) for name in MPII_KEYPOINT_NAMES]  # official joint -> dataset index
        self._gt_mat_file = getattr(metadata, "gt_mat_file", None)
        self._distributed = distributed
        self._output_dir = output_dir
        self._predictions: List[Dict[str, Any]] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            boxes, keypoints = instances.pred_boxes.tensor.numpy(), instances.pred_keypoints.numpy()
            keypoints = keypoints[:, :, :2] - CONTINUOUS_OFFSET  # 0-based pixel indices
            self._predictions.append({"image_id": inp["image_id"], "boxes": boxes.copy(), "keypoints": keypoints})

    def _match(self, dataset_dicts: Sequence[Dict[str, Any]], predictions: Dict[Any, Dict[str, Any]]) -> np.ndarray:
        """(P, 16, 2) 0-based predictions of the persons in evaluation order, official joint
        order (NaN: none)."""
        found = [np.zeros((0, 16, 2))]  # per dict, (its persons, 16, 2)
        for d in dataset_dicts:
            persons = _persons(d)
            found.append(np.full((len(persons), 16, 2), np.nan))
            pred = predictions.get(d["image_id"])
            if persons and pred is not None and len(pred["boxes"]):
                gt_boxes = Boxes(torch.tensor(_xyxy(persons), dtype=torch.float32))
                gt_boxes.clip((d["height"], d["width"]))
                iou = pairwise_iou(gt_boxes, Boxes(torch.as_tensor(pred["boxes"]))).numpy()
                taken = set()
                for flat in np.argsort(-iou, axis=None, kind="stable"):
                    g, p = np.unravel_index(flat, iou.shape)
                    if iou[g, p] < 0.5:
                        break
                    if p not in taken and np.isnan(found[-1][g]).all():
                        found[-1][g] = pred["keypoints"][p][self._order]
                        taken.add(p)
        out = np.concatenate(found)[_ordered_persons(dataset_dicts)[1]]
        unmatched = int(np.isnan(out).all(axis=(1, 2)).sum())
        if unmatched:
            logger.warning("PCKh on %s: %d persons have no prediction (all their joints count wrong)",
                           self._dataset_name, unmatched)  # fmt: skip
        return out

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        predictions = gather_on_main(self._predictions, self._distributed)
        if predictions is None:
            return {}
        dataset_dicts = DatasetCatalog.get(self._dataset_name)
        preds = self._match(dataset_dicts, {p["image_id"]: p for p in predictions})
        return {"PCKh": self.score(preds, dataset_dicts)}

    def score(self, preds: np.ndarray, dataset_dicts: Optional[Sequence[Dict[str, Any]]] = None) -> Dict[str, float]:
        """:func:`pckh_table` of 0-based predictions (P, 16, 2) of the dataset's persons (in
        evaluation order, official joint order), logged and, with ``output_dir``, written as
        pred.mat."""
        if dataset_dicts is None:
            dataset_dicts = DatasetCatalog.get(self._dataset_name)
        if self._gt_mat_file:
            gt = load_mpii_gt_mat(self._gt_mat_file)
            if len(gt.positions) != len(preds):
                raise ValueError(
                    f"dataset {self._dataset_name!r}: gt_mat_file {self._gt_mat_file} has {len(gt.positions)} "
                    f"persons, the dataset's annotations {len(preds)}"
                )
            preds = preds[:, [MPII_OFFICIAL_JOINT_NAMES.index(name) for name in gt.joint_names]]
        else:
            gt = _gt_from_dicts(dataset_dicts, self._order)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            atomic_write(os.path.join(self._output_dir, "pred.mat"), lambda f: savemat(f, {"preds": preds}))
        table = pckh_table(preds, gt)
        logger.info("PCKh of %s (%d persons):\n%s", self._dataset_name, len(preds), format_pckh_table(table))
        return table


def mean_pose_pckh_baseline(train_dataset: str, test_dataset: str) -> Dict[str, float]:
    """PCKh (:func:`pckh_table`) of the mean-pose baseline (``depotr.evaluation.baselines``: the
    mean box-normalised pose of ``train_dataset``'s persons placed in every box of
    ``test_dataset``); both registered datasets with MPII's keypoints in the same order."""
    from .baselines import mean_pose

    names = list(MetadataCatalog.get(train_dataset).keypoint_names)
    if names != list(MetadataCatalog.get(test_dataset).keypoint_names):
        raise ValueError(f"datasets {train_dataset!r} and {test_dataset!r} have different keypoint_names")
    pose = mean_pose(_coco_dict(DatasetCatalog.get(train_dataset), names))  # (K, 2)
    evaluator = PCKhEvaluator(test_dataset, distributed=False)
    test_dicts = DatasetCatalog.get(test_dataset)
    persons, order = _ordered_persons(test_dicts)
    boxes = _xyxy(persons)[order]
    preds = boxes[:, None, :2] + pose[None] * (boxes[:, None, 2:] - boxes[:, None, :2])  # (P, K, 2) continuous
    return evaluator.score(preds[:, evaluator._order] - CONTINUOUS_OFFSET, test_dicts)


def _coco_dict(dataset_dicts: Sequence[Dict[str, Any]], names: Sequence[str]) -> Dict[str, Any]:
    """The persons of dataset dicts as a COCO keypoints dict (XYWH boxes) for ``mean_pose``."""
    annotations = []
    for d in dataset_dicts:
        for anno, (x1, y1, x2, y2) in zip(_persons(d), _xyxy(_persons(d))):
            box = [x1, y1, x2 - x1, y2 - y1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": d["image_id"], "bbox": box, "area": box[2] * box[3],
                 "keypoints": list(anno["keypoints"]), "iscrowd": 0, "num_keypoints": 0, "category_id": 1}
            )  # fmt: skip
    images = [{"id": d["image_id"], "height": d["height"], "width": d["width"]} for d in dataset_dicts]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "keypoints": list(names)}]}
