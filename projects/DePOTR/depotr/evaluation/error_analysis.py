"""Analysis of COCO keypoint results: the 10 COCO metrics, PR curves and an error breakdown, as
numbers (:class:`ResultsAnalysis`); :mod:`depotr.evaluation.error_report` writes them out.

Shapes: N results (detected persons), K keypoints, H other ground-truth persons in an image,
T OKS thresholds (0.50:0.05:0.95), R recall thresholds (101), S analysis stages (7, ``STAGES``).

The error breakdown follows Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance
Pose Estimation" (ICCV 2017, coco-analyze), with the thesis' definitions (how they differ from
coco-analyze's: docs/tools.md). Every AP and AR is pycocotools' ``COCOeval(iouType="keypoints")``'s
(area "all", maxDets 20 for the breakdown); this module only decides which keypoints and results
to correct.

Matching: a result belongs to the ground-truth person COCOeval's greedy matching gives it at
OKS >= 0.1 (``MATCH_OKS``, coco-analyze's ``oksLocThrs``; area "all", top 20 results per image).
Only persons COCOeval does not ignore are analysed (non-crowd, ``num_keypoints > 0``): a result
matched to an ignored person is neither classified nor a false positive.

Keypoint classes, for each keypoint k labelled (v > 0) in the matched person g, with COCOeval's
per-keypoint similarity ks(p, q) = exp(-|p - q|^2 / (2 s^2 (2 sigma_k)^2)) (s^2 the area of the
person q belongs to: :func:`depotr.modeling.oks.keypoint_similarity`, scale rule "target"); the
first rule that holds decides (keypoints with v = 0 in g are not classified and never moved: OKS
ignores them):

* Good: ks(pred_k, g_k) >= 0.85 (``GOOD_KS``, coco-analyze's);
* Jitter: 0.5 <= ks(pred_k, g_k) < 0.85 (``NEAR_KS`` = 0.5): near the right place;
* Inversion: ks(pred_k, g_k) < 0.5 but ks(pred_k, g_m) >= 0.5 for the left/right mirror m of k
  (never for the nose, its own mirror). The mirrors are the caller's flip indices (e.g. a
  config's), by default the pairs the ground truth's keypoint names make (left_x / right_x, L_X / R_X, ...);
* Swap: ks < 0.5 for both, but ks >= 0.5 with keypoint k or m of another analysed ground-truth
  person of the same image (scaled by that person's area);
* Miss: none of the above.

Stages, cumulative, each evaluated by COCOeval at all T thresholds: ``Original``; ``Jitter``,
``Inversion``, ``Swap``, ``Miss``: the keypoints of that class moved onto g's (x, y; the score
channel kept); ``BckgFP``: the results still unmatched at OKS 0.1 after all keypoint corrections
(background false positives) removed; ``FN``: the ground-truth persons still unmatched after that
(false negatives) removed from the ground truth.

Bins (:func:`analyze_bins`): the persons split by size, truncation, occlusion and crowding
(:mod:`depotr.data.person_bins`). A bin's AP is COCOeval's on the images that hold a person of the
bin, with the persons outside the bin ignored (``num_keypoints`` 0, as for COCO's area ranges) and
without the results meant for them: a result is meant for the person it is matched to at
``MATCH_OKS``, else for the person of its image whose box holds most of its keypoints (the smallest
such box); a result inside no box is a background false positive in the bins of its image's
persons. With one person per image, that is a plain COCOeval run on the bin's images and their
results. (The size bins are the ground truth's area ranges; COCO's APm / APl differ: they also
ignore unmatched results by their own area.) A bin's error breakdown is the share of each keypoint
class among the keypoints of the results matched to its persons (classified with all persons).
"""

import contextlib
import copy
import io
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from ..data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, name_flip_indices
from ..data.person_bins import BINS, person_bins
from ..file_io import is_finite_number, repeated_ids
from ..modeling.oks import keypoint_similarity

logger = logging.getLogger(__name__)

METRIC_NAMES: Tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
KEYPOINT_CLASSES: Tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
GOOD, JITTER, INVERSION, SWAP, MISS = range(len(KEYPOINT_CLASSES))
UNLABELLED = -1  # keypoint not labelled in the matched ground truth (v = 0)
STAGES: Tuple[str, ...] = ("Original", "Jitter", "Inversion", "Swap", "Miss", "BckgFP", "FN")
CORRECTED_CLASSES: Tuple[int, ...] = (JITTER, INVERSION, SWAP, MISS)  # stages 1..4, in order
GOOD_KS = 0.85  # ks at or above: a good keypoint
NEAR_KS = 0.5  # ks at or above: near that ground-truth keypoint
MATCH_OKS = 0.1  # OKS at or above: a result covers a ground-truth person
MAX_DETS = 20  # COCOeval's keypoint maxDets
# Fields COCOeval reads from ground-truth annotations and from results.
GT_ANNOTATION_KEYS = ("id", "image_id", "keypoints", "num_keypoints", "area", "bbox", "iscrowd")
RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")


@dataclass
class Matching:
    """Result-to-person matches of COCOeval at one OKS threshold (area "all", top 20)."""

    matched: Dict[int, int]  # result index -> id of an analysed ground-truth person
    background: List[int]  # indices of results matched to no ground-truth person
    false_negatives: List[int]  # ids of analysed ground-truth persons matched by no result


@dataclass
class ResultsAnalysis:
    """The 10 COCO metrics and the error breakdown of one results file.

    ``precision[s]`` (T, R) is COCOeval's ``eval["precision"]`` of stage ``STAGES[s]`` for area
    "all", maxDets 20 (a single category); -1 where there is no ground truth. ``ap`` (S, T) and
    ``ap_mean`` (S,) average it as ``COCOeval.summarize`` does, so ``ap_mean[0]`` is the AP.
    ``keypoint_labels`` maps each classified result's index to its (K,) class indices into
    ``KEYPOINT_CLASSES`` (``UNLABELLED`` for v = 0).
    """

    metrics: Dict[str, float]
    oks_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    precision: np.ndarray
    ap: np.ndarray
    ap_mean: np.ndarray
    keypoint_labels: Dict[int, np.ndarray]
    num_background_fp: int
    num_false_negatives: int
    matched: Dict[int, int]  # result index -> id of the ground-truth person it is matched to
    num_images: int  # ground-truth images
    num_images_without_results: int  # ground-truth images no result names: their persons are misses

    def keypoint_counts(self) -> Dict[str, int]:
        """Number of classified keypoints per class of ``KEYPOINT_CLASSES``."""
        labels = np.concatenate(list(self.keypoint_labels.values())) if self.keypoint_labels else np.zeros(0)
        return {name: int((labels == c).sum()) for c, name in enumerate(KEYPOINT_CLASSES)}

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable summary (APs per stage and threshold, counts)."""
        return {
            "oks_thresholds": [round(float(t), 2) for t in self.oks_thresholds],
            "ap": {stage: [float(a) for a in self.ap[s]] for s, stage in enumerate(STAGES)},
            "ap_mean": {stage: float(self.ap_mean[s]) for s, stage in enumerate(STAGES)},
            "keypoint_counts": self.keypoint_counts(),
            "num_analysed_results": len(self.keypoint_labels),
            "num_background_fp": self.num_background_fp,
            "num_false_negatives": self.num_false_negatives,
            "num_images": self.num_images,
            "num_images_without_results": self.num_images_without_results,
            "thresholds": {"good_ks": GOOD_KS, "near_ks": NEAR_KS, "match_oks": MATCH_OKS, "max_dets": MAX_DETS},
        }


def check_ground_truth(gt: Dict[str, Any]) -> int:
    """Checks a COCO keypoints ground truth (one category) and returns its K."""
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise ValueError(f"ground truth has no '{key}' list")
    if len(gt["categories"]) != 1 or "keypoints" not in gt["categories"][0]:
        raise ValueError("ground truth must have exactly one category, with a 'keypoints' list of names")
    num_keypoints = len(gt["categories"][0]["keypoints"])
    for i, ann in enumerate(gt["annotations"]):
        _check_fields(ann, f"ground-truth annotations[{i}]", GT_ANNOTATION_KEYS, num_keypoints)
    # pycocotools indexes images and annotations by id: a repeated id silently merges two images or
    # counts one person twice and loses the other, and an annotation of an unknown image is dropped.
    for i, image in enumerate(gt["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise ValueError(f"ground-truth images[{i}] has no 'id'")
    image_ids = {image["id"] for image in gt["images"]}
    for what, entries in (("images", gt["images"]), ("annotations", gt["annotations"])):
        repeated = repeated_ids(entry["id"] for entry in entries)
        if repeated:
            raise ValueError(f"ground-truth {what} ids must be unique, repeated: {', '.join(repeated[:5])}")
    for i, ann in enumerate(gt["annotations"]):
        if ann["image_id"] not in image_ids:
            raise ValueError(f"ground-truth annotations[{i}] has image_id {ann['image_id']}, not in 'images'")
    return num_keypoints


def _check_fields(entry: Dict[str, Any], where: str, keys: Sequence[str], num_keypoints: int) -> None:
    """ValueError naming ``where`` if ``entry`` lacks one of ``keys`` or has not 3K keypoint values."""
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"{where} lacks {missing}")
    if not isinstance(entry["keypoints"], list):
        raise ValueError(
            f"{where} has keypoints {entry['keypoints']!r}; expected a list of 3 * {num_keypoints} = "
            f"{3 * num_keypoints} numbers"
        )
    if len(entry["keypoints"]) != 3 * num_keypoints:
        raise ValueError(
            f"{where} has {len(entry['keypoints'])} keypoint values, expected 3 * {num_keypoints} = {3 * num_keypoints}"
        )


def check_results(results: Any, gt: Dict[str, Any], num_keypoints: int) -> None:
    """Checks a COCO keypoint results list against the ground truth ``gt``."""
    if not isinstance(results, list) or not results:
        raise ValueError("results must be a non-empty json list of {image_id, category_id, keypoints, score}")
    image_ids = {img["id"] for img in gt["images"]}
    category_id = gt["categories"][0]["id"]
    for i, res in enumerate(results):
        if not isinstance(res, dict):
            raise ValueError(f"results[{i}] is not a json object")
        _check_fields(res, f"results[{i}]", RESULT_KEYS, num_keypoints)
        bad = next((j for j, v in enumerate(res["keypoints"]) if not is_finite_number(v)), None)
        if bad is not None:
            raise ValueError(
                f"results[{i}] has keypoint value {res['keypoints'][bad]!r} at index {bad}; expected finite numbers"
            )
        if not is_finite_number(res["score"]):
            raise ValueError(f"results[{i}] has score {res['score']!r}; expected a finite number")
        if not _hashable(res["image_id"]) or res["image_id"] not in image_ids:
            raise ValueError(f"results[{i}] has image_id {res['image_id']!r}, which is not in the ground truth")
        if res["category_id"] != category_id:
            raise ValueError(
                f"results[{i}] has category_id {res['category_id']}, the ground truth's category is {category_id}"
            )


def _hashable(value: Any) -> bool:
    """Whether a value read from json can be an id (not a list or an object)."""
    return not isinstance(value, (list, dict))


def resolve_sigmas(sigmas: Optional[Sequence[float]], gt: Dict[str, Any]) -> np.ndarray:
    """OKS sigmas (K,) of the checked ground truth ``gt``: ``sigmas``, or when ``None`` and its
    keypoints are COCO's 17 person keypoints, pycocotools' COCO ones (used as they are, within 1e-17
    of ``COCO_PERSON_OKS_SIGMAS``: the metrics are a plain COCOeval run's, bit for bit); a
    ValueError otherwise (COCO's sigmas would be silently wrong for other keypoints, 17 or not)."""
    names = list(gt["categories"][0]["keypoints"])
    num_keypoints = len(names)
    if sigmas is None and names != list(COCO_PERSON_KEYPOINT_NAMES):
        raise ValueError(
            f"the ground truth's keypoints {names} are not COCO's 17 person keypoints, whose OKS sigmas are "
            "the default: pass one sigma per keypoint (analyze_results.py: --sigmas, or --config-file of the run)"
        )
    values = Params(iouType="keypoints").kpt_oks_sigmas if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    if len(values) != num_keypoints:
        raise ValueError(f"{len(values)} OKS sigmas for {num_keypoints} keypoints (pass one sigma per keypoint)")
    return values


def resolve_mirror(flip_indices: Optional[Sequence[int]], gt: Dict[str, Any]) -> np.ndarray:
    """(K,) index of each keypoint's left/right mirror: ``flip_indices``, or when ``None`` the
    pairs the ground truth's keypoint names make (``name_flip_indices``: left_x / right_x, L_X / R_X, ...)."""
    names = list(gt["categories"][0]["keypoints"])
    mirror = np.asarray(name_flip_indices(names) if flip_indices is None else flip_indices, dtype=np.int64)
    if sorted(mirror.tolist()) != list(range(len(names))):
        raise ValueError(
            f"flip indices {mirror.tolist()} are not a permutation of the ground truth's {len(names)} keypoints"
        )
    return mirror


def _quiet() -> contextlib.redirect_stdout:
    """Silences pycocotools' progress prints."""
    return contextlib.redirect_stdout(io.StringIO())


def build_coco(dataset: Dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` over a copy of ``dataset``."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with _quiet():
        coco.createIndex()
    return coco


def _keypoint_eval(coco_gt: COCO, results: List[Dict[str, Any]], sigmas: np.ndarray) -> COCOeval:
    """COCOeval (keypoints, ``sigmas``) of a copy of ``results`` (result i gets id i + 1; empty allowed)."""
    if results:
        with _quiet():
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    else:
        coco_dt = build_coco({**coco_gt.dataset, "annotations": []})
    coco_eval = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    coco_eval.params.kpt_oks_sigmas = sigmas
    return coco_eval


def evaluate_keypoints(coco_gt: COCO, results: List[Dict[str, Any]], sigmas: np.ndarray) -> COCOeval:
    """COCOeval (keypoints, standard parameters) evaluated, accumulated and summarised."""
    coco_eval = _keypoint_eval(coco_gt, results, sigmas)
    with _quiet():
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def match_results(coco_gt: COCO, results: List[Dict[str, Any]], sigmas: np.ndarray, oks: float = MATCH_OKS) -> Matching:
    """COCOeval's greedy matching at OKS ``oks`` (area "all", top 20 results per image)."""
    coco_eval = _keypoint_eval(coco_gt, results, sigmas)
    params = coco_eval.params
    params.iouThrs = np.array([oks])
    params.areaRng, params.areaRngLbl = params.areaRng[:1], params.areaRngLbl[:1]  # "all"
    with _quiet():
        coco_eval.evaluate()
    matching = Matching({}, [], [])
    for image_eval in filter(None, coco_eval.evalImgs):
        for dt_id, gt_id, ignored in zip(image_eval["dtIds"], image_eval["dtMatches"][0], image_eval["dtIgnore"][0]):
            if ignored:
                continue
            if gt_id:
                matching.matched[dt_id - 1] = int(gt_id)
            else:
                matching.background.append(dt_id - 1)
        for gt_id, dt_id, ignored in zip(image_eval["gtIds"], image_eval["gtMatches"][0], image_eval["gtIgnore"]):
            if not ignored and not dt_id:
                matching.false_negatives.append(gt_id)
    return matching


def _all_area_precision(coco_eval: COCOeval) -> np.ndarray:
    """(T, R) precision for area "all", maxDets 20, the single category."""
    params = coco_eval.params
    return coco_eval.eval["precision"][:, :, 0, params.areaRngLbl.index("all"), params.maxDets.index(MAX_DETS)]


def mean_valid(precision: np.ndarray) -> float:
    """Mean over entries > -1, -1 when there are none (``COCOeval.summarize``'s rule)."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _similarity(pred: np.ndarray, target: np.ndarray, area: Any, sigmas: np.ndarray) -> np.ndarray:
    """:func:`keypoint_similarity` with COCOeval's scale rule ("target": the ground-truth person's
    area) in float64: pred, target (..., K, 2), area (...) -> (..., K)."""
    tensors = [torch.as_tensor(np.asarray(array, dtype=np.float64)) for array in (pred, target, area, sigmas)]
    return keypoint_similarity(*tensors, "target").numpy()


def classify_keypoints(
    pred: np.ndarray,
    person: np.ndarray,
    area: float,
    others: np.ndarray,
    other_areas: np.ndarray,
    sigmas: np.ndarray,
    mirror: np.ndarray,
) -> np.ndarray:
    """Classes of one matched result's keypoints (rules in the module docstring).

    Args:
        pred: (K, 2) predicted x, y.
        person: (K, 3) the matched ground-truth person's x, y, v; area: its area.
        others: (H, K, 3) the image's other analysed ground-truth persons; other_areas: (H,) theirs.
        sigmas: (K,) OKS sigmas.
        mirror: (K,) index of each keypoint's left/right mirror.
    Returns:
        (K,) indices into ``KEYPOINT_CLASSES``, ``UNLABELLED`` where v = 0 in ``person``.
    """
    own = _similarity(pred, person[:, :2], area, sigmas)
    inverted = _similarity(pred, person[mirror, :2], area, sigmas)
    other_same = _similarity(pred, others[:, :, :2], other_areas, sigmas)  # (H, K)
    other_mirror = _similarity(pred, others[:, mirror, :2], other_areas, sigmas)  # (H, K)
    near_other = ((other_same >= NEAR_KS) & (others[:, :, 2] > 0)) | (
        (other_mirror >= NEAR_KS) & (others[:, mirror, 2] > 0)
    )

    # Later assignments take precedence: the rules are written from the last to the first.
    labels = np.full(len(pred), MISS)
    labels[near_other.any(0)] = SWAP
    labels[(inverted >= NEAR_KS) & (person[mirror, 2] > 0) & (mirror != np.arange(len(pred)))] = INVERSION
    labels[own >= NEAR_KS] = JITTER
    labels[own >= GOOD_KS] = GOOD
    labels[person[:, 2] == 0] = UNLABELLED
    return labels


def _keypoints(annotation: Dict[str, Any]) -> np.ndarray:
    """(K, 3) keypoints of a ground-truth annotation or result."""
    return np.asarray(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)


def _analysed(annotation: Dict[str, Any]) -> bool:
    """Whether COCOeval analyses the ground-truth person (non-crowd, num_keypoints > 0)."""
    return not annotation["iscrowd"] and annotation["num_keypoints"] > 0


def classify_matched(
    coco_gt: COCO, results: List[Dict[str, Any]], matched: Dict[int, int], sigmas: np.ndarray, mirror: np.ndarray
) -> Dict[int, np.ndarray]:
    """(K,) keypoint classes of every matched result, keyed by result index."""
    labels = {}
    for index, gt_id in matched.items():
        person = coco_gt.anns[gt_id]
        others = [a for a in coco_gt.imgToAnns[person["image_id"]] if _analysed(a) and a["id"] != gt_id]
        other_keypoints = np.stack([_keypoints(a) for a in others]) if others else np.zeros((0, len(sigmas), 3))
        other_areas = np.array([a["area"] for a in others], dtype=np.float64)
        pred = _keypoints(results[index])[:, :2]
        labels[index] = classify_keypoints(
            pred, _keypoints(person), person["area"], other_keypoints, other_areas, sigmas, mirror
        )
    return labels


def correct_keypoints(
    results: List[Dict[str, Any]],
    labels: Dict[int, np.ndarray],
    matched: Dict[int, int],
    coco_gt: COCO,
    keypoint_class: int,
) -> List[Dict[str, Any]]:
    """A copy of ``results`` with the keypoints of class ``keypoint_class`` moved onto the
    matched ground truth's x, y (their score channel kept)."""
    corrected = list(results)
    for index, result_labels in labels.items():
        fix = result_labels == keypoint_class
        if fix.any():
            keypoints = _keypoints(results[index])
            keypoints[fix, :2] = _keypoints(coco_gt.anns[matched[index]])[fix, :2]
            corrected[index] = {**results[index], "keypoints": keypoints.reshape(-1).tolist()}
    return corrected


def analyze_keypoint_results(
    gt: Dict[str, Any],
    results: List[Dict[str, Any]],
    sigmas: Optional[Sequence[float]] = None,
    flip_indices: Optional[Sequence[int]] = None,
) -> ResultsAnalysis:
    """Checks the inputs, computes the 10 COCO keypoint metrics and the error breakdown.

    Args:
        gt: COCO keypoints ground truth (one category).
        results: COCO keypoint results, N dicts with image_id, category_id, keypoints (3K), score.
        sigmas: (K,) OKS sigmas; ``None``: the COCO ones (:func:`resolve_sigmas`).
        flip_indices: (K,) index of each keypoint's left/right mirror (e.g.
            ``keypoint_metadata_from_config(cfg).flip_indices``); ``None``: the keypoint table's
            pairs among the ground truth's keypoint names.
    """
    num_keypoints = check_ground_truth(gt)
    check_results(results, gt, num_keypoints)
    sigmas = resolve_sigmas(sigmas, gt)
    mirror = resolve_mirror(flip_indices, gt)
    coco_gt = build_coco(gt)

    original = evaluate_keypoints(coco_gt, results, sigmas)
    matching = match_results(coco_gt, results, sigmas)
    labels = classify_matched(coco_gt, results, matching.matched, sigmas, mirror)
    precisions = [_all_area_precision(original)]
    corrected = results
    for keypoint_class in CORRECTED_CLASSES:
        corrected = correct_keypoints(corrected, labels, matching.matched, coco_gt, keypoint_class)
        precisions.append(_all_area_precision(evaluate_keypoints(coco_gt, corrected, sigmas)))

    background = set(match_results(coco_gt, corrected, sigmas).background)
    foreground = [r for i, r in enumerate(corrected) if i not in background]
    precisions.append(_all_area_precision(evaluate_keypoints(coco_gt, foreground, sigmas)))
    false_negatives = set(match_results(coco_gt, foreground, sigmas).false_negatives)
    covered_gt = build_coco({**gt, "annotations": [a for a in gt["annotations"] if a["id"] not in false_negatives]})
    precisions.append(_all_area_precision(evaluate_keypoints(covered_gt, foreground, sigmas)))

    precision = np.stack(precisions)
    without_results = {image["id"] for image in gt["images"]} - {r["image_id"] for r in results}
    if without_results:
        persons = sum(a["image_id"] in without_results and _analysed(a) for a in gt["annotations"])
        logger.warning(
            f"{len(without_results)} of {len(gt['images'])} ground-truth images have no result: their "
            f"{persons} annotated persons count as misses (false negatives)"
        )
    return ResultsAnalysis(
        metrics={name: float(value) for name, value in zip(METRIC_NAMES, original.stats)},
        oks_thresholds=np.asarray(original.params.iouThrs),
        recall_thresholds=np.asarray(original.params.recThrs),
        precision=precision,
        ap=np.array([[mean_valid(p) for p in stage] for stage in precision]),
        ap_mean=np.array([mean_valid(stage) for stage in precision]),
        keypoint_labels=labels,
        num_background_fp=len(background),
        num_false_negatives=len(false_negatives),
        matched=matching.matched,
        num_images=len(gt["images"]),
        num_images_without_results=len(without_results),
    )


def _intended_persons(
    gt: Dict[str, Any], results: List[Dict[str, Any]], matched: Dict[int, int]
) -> List[Optional[int]]:
    """Per result, the id of the person it is meant for (module docstring), ``None`` for none."""
    boxes: Dict[Any, List[Tuple[int, List[float]]]] = {}
    for ann in gt["annotations"]:
        boxes.setdefault(ann["image_id"], []).append((ann["id"], ann["bbox"]))
    owners: List[Optional[int]] = []
    for index, result in enumerate(results):
        if index in matched:
            owners.append(matched[index])
            continue
        xy = _keypoints(result)[:, :2]
        best, best_key = None, (0, 0.0)
        for ann_id, (x, y, w, h) in boxes.get(result["image_id"], []):
            count = int(((xy[:, 0] >= x) & (xy[:, 0] <= x + w) & (xy[:, 1] >= y) & (xy[:, 1] <= y + h)).sum())
            if count > 0 and (count, -w * h) > best_key:
                best, best_key = ann_id, (count, -w * h)
        owners.append(best)
    return owners


def analyze_bins(
    gt: Dict[str, Any],
    results: List[Dict[str, Any]],
    analysis: ResultsAnalysis,
    sigmas: Optional[Sequence[float]] = None,
    baseline_results: Optional[List[Dict[str, Any]]] = None,
) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """AP and keypoint-class shares per bin (module docstring), beside a baseline's AP.

    Args:
        gt, results, sigmas: as :func:`analyze_keypoint_results`, which made ``analysis``.
        baseline_results: e.g. the mean-pose baseline's results (``baselines.mean_pose_results``).
    Returns:
        attribute -> bin -> {"persons": analysed persons, "AP" (%, ``None`` without persons),
        "baseline_AP" (%, with ``baseline_results`` and persons), "keypoints": classified keypoints,
        "<class>" (%) for each of ``KEYPOINT_CLASSES``}.
    """
    check_ground_truth(gt)
    sigmas = resolve_sigmas(sigmas, gt)
    bins = person_bins(gt)
    # AP key -> (results, the person each is meant for)
    runs = {"AP": (results, _intended_persons(gt, results, analysis.matched))}
    if baseline_results is not None:
        baseline_matched = match_results(build_coco(gt), baseline_results, sigmas).matched
        runs["baseline_AP"] = (baseline_results, _intended_persons(gt, baseline_results, baseline_matched))
    analysed = {a["id"] for a in gt["annotations"] if _analysed(a)}
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for attribute, names in BINS.items():
        out[attribute] = {}
        for name, _ in names:
            keep = {i for i in analysed if bins[i][attribute] == name}
            row: Dict[str, Any] = {"persons": len(keep), "AP": None}
            if keep:
                # The persons outside the bin ignored, as COCO's area ranges ignore them.
                anns = [a if a["id"] in keep else {**a, "num_keypoints": 0} for a in gt["annotations"]]
                coco_gt = build_coco({**gt, "annotations": anns})
                images = {a["image_id"] for a in gt["annotations"] if a["id"] in keep}
                for key, (run, owners) in runs.items():
                    mine = [
                        r
                        for r, owner in zip(run, owners)
                        if owner in keep or (owner is None and r["image_id"] in images)
                    ]
                    row[key] = 100.0 * float(evaluate_keypoints(coco_gt, mine, sigmas).stats[0])
            labels = [analysis.keypoint_labels[r] for r, g in analysis.matched.items() if g in keep]
            labels = np.concatenate(labels) if labels else np.zeros(0)
            labels = labels[labels != UNLABELLED]
            row["keypoints"] = int(labels.size)
            for c, class_name in enumerate(KEYPOINT_CLASSES):
                row[class_name] = 100.0 * float((labels == c).mean()) if labels.size else 0.0
            out[attribute][name] = row
    return out
