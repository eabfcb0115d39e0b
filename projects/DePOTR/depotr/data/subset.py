"""Representative subsets of a COCO keypoints json (thesis section 6.1; ``tools/make_subset.py``).

A fraction of the I images such that, for each of the K keypoints, the shares of visible (v = 2),
occluded (v = 1) and unlabelled / outside (v = 0) among the non-crowd persons stay within
``tolerance_pp`` percentage points of the full set's.

"Person" is the annotated category: the json's only category whatever its name (a custom
keypoint dataset), else the one named "person".
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cli import ConfigError
from .custom import REQUIRED_JSON_FIELDS, check_json_fields

logger = logging.getLogger(__name__)

__all__ = [
    "plot_visibility_distributions",
    "select_subset",
    "subset_coco",
    "visibility_counts",
    "visibility_distribution",
]

# Columns of the distributions: v = 2, v = 1, v = 0.
VISIBILITY_LABELS = ("visible (v=2)", "occluded (v=1)", "unlabelled / outside (v=0)")


def _entries(
    coco: Dict[str, Any], key: str, fields: Sequence[str], optional: Sequence[str] = ()
) -> List[Dict[str, Any]]:
    """``coco[key]`` (missing: a KeyError naming it), checked to be a list of objects that have
    ``fields``, each valid by its rule in ``REQUIRED_JSON_FIELDS`` (ids: integers, as
    ``load_keypoint_json`` requires; an image_id "2" names no image 2), as are the ``optional``
    fields an entry has (an iscrowd "0" would count as a crowd); else a ConfigError naming the entry
    and the field."""
    entries = coco[key]
    if not isinstance(entries, list):
        raise ConfigError(f"field {key!r} is a json {_json_type(entries)}, expected a list of objects")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}[{i}] is a json {_json_type(entry)}, expected an object")
        missing = [field for field in fields if field not in entry]
        if missing:
            raise ConfigError(f"{key}[{i}] (id {entry.get('id')}) is missing field(s) {missing}")
        rules = REQUIRED_JSON_FIELDS[key]
        checked = [f for f in fields if f in rules] + [f for f in optional if f in entry]
        check_json_fields(f"{key}[{i}] (id {entry.get('id')})", entry, {f: rules[f] for f in checked})
    return entries


def _json_type(value: Any) -> str:
    """The json name of ``value``'s type (object, list, string, ...)."""
    return {dict: "object", str: "string", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _person_category(coco: Dict[str, Any]) -> Dict[str, Any]:
    """The only category whatever its name, else the one named "person"."""
    categories = _entries(coco, "categories", ("id",))
    if len(categories) == 1:
        return categories[0]
    for cat in categories:
        if cat.get("name") == "person":
            return cat
    raise ValueError(
        f"the json has {len(categories)} categories {[c.get('name') for c in categories]} and none named 'person' "
        "(a json with one category uses it whatever its name)"
    )


def keypoint_names(coco: Dict[str, Any]) -> List[str]:
    """K keypoint names of the person category (the only one, else the one named "person")."""
    category = _person_category(coco)
    names = category.get("keypoints")
    if not names:
        raise ValueError(f"the category {category.get('name')!r} lists no keypoints")
    return list(names)


def visibility_counts(coco: Dict[str, Any]) -> Tuple[List[int], np.ndarray, np.ndarray]:
    """Per image: counts (I, K, 3) of v = 2 / 1 / 0 over its non-crowd person annotations and
    the number of such annotations (I,). Returns (image ids, counts, persons).

    An annotation whose (integer) ``image_id`` no image has is left out (:func:`select_subset` counts them).

    Raises:
        ConfigError naming the field: ``images`` / ``annotations`` / ``categories`` not lists of
        objects, an entry without a field read here or with an id that is not an integer (a
        ``category_id`` "1" would be another category: left out of the shares, yet in the subset),
        keypoints that are not 3K finite numbers.
    """
    cat_id = _person_category(coco)["id"]
    k = len(keypoint_names(coco))
    image_ids = [img["id"] for img in _entries(coco, "images", ("id",))]
    row = {image_id: i for i, image_id in enumerate(image_ids)}
    counts = np.zeros((len(image_ids), k, 3), np.int64)
    persons = np.zeros(len(image_ids), np.int64)
    for i, anno in enumerate(_entries(coco, "annotations", ("image_id", "category_id"), optional=("iscrowd",))):
        if anno["category_id"] != cat_id or anno.get("iscrowd", 0) or anno["image_id"] not in row:
            continue
        kps = np.asarray(anno.get("keypoints") or [0] * (3 * k))
        if kps.dtype.kind not in "iuf" or kps.shape != (3 * k,) or not np.isfinite(kps).all():
            raise ConfigError(
                f"annotations[{i}] (id {anno.get('id')}): field 'keypoints' is {anno['keypoints']!r}, expected "
                f"{3 * k} finite numbers (x, y, v for {k} keypoints)"
            )
        v = kps[2::3]
        counts[row[anno["image_id"]]] += np.stack([v == 2, v == 1, (v != 1) & (v != 2)], axis=1)
        persons[row[anno["image_id"]]] += 1
    return image_ids, counts, persons


def visibility_distribution(coco: Dict[str, Any], image_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """(K, 3) shares of v = 2 / 1 / 0 per keypoint among the non-crowd person annotations of
    ``image_ids`` (default: all images)."""
    ids, counts, persons = visibility_counts(coco)
    if image_ids is not None:
        keep = np.isin(np.asarray(ids), np.asarray(list(image_ids)))
        counts, persons = counts[keep], persons[keep]
    total = persons.sum()
    if total == 0:
        raise ValueError("no non-crowd person annotations in the selected images")
    return counts.sum(0) / total


def select_subset(
    coco: Dict[str, Any],
    fraction: float,
    seed: int = 0,
    tolerance_pp: float = 1.0,
    max_steps: int = 20000,
    batch: int = 512,
    patience: int = 300,
) -> List[int]:
    """Image ids of a random subset of ``round(fraction * I)`` images whose (K, 3) visibility shares
    deviate from the full set's by less than ``tolerance_pp`` percentage points (max over keypoints
    and v), by greedy swaps: each step makes the best of ``batch`` random (in, out) pairs if it
    lowers the deviation, up to ``max_steps`` steps or ``patience`` steps without improvement.
    Annotations whose ``image_id`` no image has (in neither the shares nor :func:`subset_coco`'s
    output) are counted in a warning, as Detectron2's ``load_coco_json`` does.

    Raises:
        ValueError: fraction outside (0, 1], or no subset within the tolerance was found.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids, counts, persons = visibility_counts(coco)
    known = set(ids)
    orphans = [i for i, anno in enumerate(coco["annotations"]) if anno["image_id"] not in known]
    if orphans:
        first = orphans[0]
        logger.warning(
            f"{len(orphans)} of {len(coco['annotations'])} annotations name an image_id that no image of the json "
            f"has (first: annotations[{first}], image_id {coco['annotations'][first]['image_id']}); they are left "
            "out of the visibility shares and of the subset."
        )
    n = len(ids)
    m = max(1, int(round(fraction * n)))
    if persons.sum() == 0:
        raise ValueError("the json has no non-crowd person annotations")
    target = counts.sum(0) / persons.sum()
    counts = counts.astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    inside, outside = order[:m].copy(), order[m:].copy()
    total, people = counts[inside].sum(0), float(persons[inside].sum())

    def deviation(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.abs(t / p[..., None, None] - target).max(axis=(-1, -2)) * 100
        return np.where(p > 0, dev, np.inf)

    dev = float(deviation(total, np.asarray(people)))
    steps = stalled = 0
    while dev >= tolerance_pp and len(outside) and steps < max_steps and stalled < patience:
        steps += 1
        stalled += 1
        a = rng.integers(0, m, batch)
        b = rng.integers(0, len(outside), batch)
        i, j = inside[a], outside[b]
        t = total - counts[i] + counts[j]
        p = people - persons[i] + persons[j]
        devs = deviation(t, p.astype(np.float64))
        best = int(np.argmin(devs))
        if devs[best] < dev:
            stalled = 0
            dev = float(devs[best])
            total, people = t[best], float(p[best])
            inside[a[best]], outside[b[best]] = j[best], i[best]
    if dev >= tolerance_pp:
        raise ValueError(
            f"no subset of {m} of {n} images keeps the visibility shares within {tolerance_pp} pp "
            f"(best {dev:.2f} pp after {steps} swap steps); use a larger fraction"
        )
    logger.info("Subset: %d of %d images, max visibility-share deviation %.3f pp after %d steps.", m, n, dev, steps)
    return sorted(int(ids[k]) for k in inside)


def subset_coco(coco: Dict[str, Any], image_ids: Sequence[int]) -> Dict[str, Any]:
    """The json restricted to ``image_ids`` (their images and annotations; other keys kept)."""
    keep = set(image_ids)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in coco["images"] if img["id"] in keep]
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    return out


def plot_visibility_distributions(
    full: np.ndarray, subset: np.ndarray, names: Sequence[str], path: str, title: str = ""
) -> None:
    """Bar chart PNG (Agg, no pyplot state) of the (K, 3) shares of the full set and subset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9))
    FigureCanvasAgg(fig)
    x = np.arange(len(names))
    for c, label in enumerate(VISIBILITY_LABELS):
        ax = fig.add_subplot(3, 1, c + 1)
        ax.bar(x - 0.2, full[:, c] * 100, 0.4, label="full set")
        ax.bar(x + 0.2, subset[:, c] * 100, 0.4, label="subset")
        ax.set_ylabel(f"{label} [%]")
        ax.set_xticks(x)
        ax.set_xticklabels(names if c == 2 else [], rotation=45, ha="right")
        if c == 0:
            dev = np.abs(full - subset).max() * 100
            ax.set_title(f"{title} max deviation {dev:.2f} pp".strip())
            ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
