"""The keypoint tables of COCO, MPII and CrowdPose persons (as Detectron2's ``builtin_meta.py``).

Names, left/right swap partners, OKS sigmas, drawing colours, body halves and skeleton edges live
here and nowhere else; flip indices and the half-body mask are derived from them. A model's
keypoints come from its config alone, by :func:`keypoint_metadata_from_config`.
"""

import logging
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import create_keypoint_hflip_indices

from ..cli import ConfigError

logger = logging.getLogger(__name__)

# (name, swap partner, OKS sigma, RGB colour, body half). Sigmas are the COCO standard (Ronchi &
# Perona); the halves are those of HRNet's / mmpose's half-body augmentation (head and arms upper).
COCO_PERSON_KEYPOINT_TABLE: Tuple[Tuple[str, str, float, Tuple[int, int, int], str], ...] = (
    ("nose", "nose", 0.026, (102, 204, 255), "upper"),
    ("left_eye", "right_eye", 0.025, (51, 153, 255), "upper"),
    ("right_eye", "left_eye", 0.025, (102, 0, 204), "upper"),
    ("left_ear", "right_ear", 0.035, (51, 102, 255), "upper"),
    ("right_ear", "left_ear", 0.035, (153, 102, 255), "upper"),
    ("left_shoulder", "right_shoulder", 0.079, (255, 128, 0), "upper"),
    ("right_shoulder", "left_shoulder", 0.079, (153, 255, 204), "upper"),
    ("left_elbow", "right_elbow", 0.072, (128, 229, 255), "upper"),
    ("right_elbow", "left_elbow", 0.072, (153, 255, 153), "upper"),
    ("left_wrist", "right_wrist", 0.062, (102, 255, 224), "upper"),
    ("right_wrist", "left_wrist", 0.062, (255, 102, 0), "upper"),
    ("left_hip", "right_hip", 0.107, (255, 255, 77), "lower"),
    ("right_hip", "left_hip", 0.107, (153, 255, 204), "lower"),
    ("left_knee", "right_knee", 0.087, (191, 255, 128), "lower"),
    ("right_knee", "left_knee", 0.087, (255, 195, 77), "lower"),
    ("left_ankle", "right_ankle", 0.089, (0, 255, 255), "lower"),
    ("right_ankle", "left_ankle", 0.089, (255, 0, 255), "lower"),
)

# Skeleton edges by name with their drawing colour (Detectron2's KEYPOINT_CONNECTION_RULES).
COCO_PERSON_SKELETON: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = (
    ("left_ear", "left_eye", (102, 204, 255)),
    ("right_ear", "right_eye", (51, 153, 255)),
    ("left_eye", "nose", (102, 0, 204)),
    ("nose", "right_eye", (51, 102, 255)),
    ("left_shoulder", "right_shoulder", (255, 128, 0)),
    ("left_shoulder", "left_elbow", (153, 255, 204)),
    ("right_shoulder", "right_elbow", (128, 229, 255)),
    ("left_elbow", "left_wrist", (153, 255, 153)),
    ("right_elbow", "right_wrist", (102, 255, 224)),
    ("left_hip", "right_hip", (255, 102, 0)),
    ("left_hip", "left_knee", (255, 255, 77)),
    ("right_hip", "right_knee", (153, 255, 204)),
    ("left_knee", "left_ankle", (191, 255, 128)),
    ("right_knee", "right_ankle", (255, 195, 77)),
    ("left_shoulder", "left_hip", (0, 255, 255)),
    ("right_shoulder", "right_hip", (255, 0, 255)),
)

COCO_PERSON_KEYPOINT_NAMES: Tuple[str, ...] = tuple(row[0] for row in COCO_PERSON_KEYPOINT_TABLE)

# MPII's 16 keypoints, rows as COCO's, in the joint order of its annotation files (the official
# toolkit's ids 0-15, as HRNet's and mmpose's annot/*.json). Halves: HRNet's upper_body_ids. The
# sigmas serve OKS-NMS only (MPII is evaluated by PCKh): COCO's of the same joint; pelvis as the
# hips, thorax and upper neck as the shoulders, head top as the ears.
MPII_KEYPOINT_TABLE: Tuple[Tuple[str, str, float, Tuple[int, int, int], str], ...] = (
    ("right_ankle", "left_ankle", 0.089, (255, 0, 255), "lower"),
    ("right_knee", "left_knee", 0.087, (255, 195, 77), "lower"),
    ("right_hip", "left_hip", 0.107, (153, 255, 204), "lower"),
    ("left_hip", "right_hip", 0.107, (255, 255, 77), "lower"),
    ("left_knee", "right_knee", 0.087, (191, 255, 128), "lower"),
    ("left_ankle", "right_ankle", 0.089, (0, 255, 255), "lower"),
    ("pelvis", "pelvis", 0.107, (255, 102, 0), "lower"),
    ("thorax", "thorax", 0.079, (255, 128, 0), "upper"),
    ("upper_neck", "upper_neck", 0.079, (102, 204, 255), "upper"),
    ("head_top", "head_top", 0.035, (51, 153, 255), "upper"),
    ("right_wrist", "left_wrist", 0.062, (255, 102, 0), "upper"),
    ("right_elbow", "left_elbow", 0.072, (153, 255, 153), "upper"),
    ("right_shoulder", "left_shoulder", 0.079, (153, 255, 204), "upper"),
    ("left_shoulder", "right_shoulder", 0.079, (255, 128, 0), "upper"),
    ("left_elbow", "right_elbow", 0.072, (128, 229, 255), "upper"),
    ("left_wrist", "right_wrist", 0.062, (102, 255, 224), "upper"),
)
# The official evaluation's joint names (gt_valid.mat's dataset_joints), in the table's order.
MPII_OFFICIAL_JOINT_NAMES: Tuple[str, ...] = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip
MPII_SKELETON: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = (
    ("right_ankle", "right_knee", (255, 195, 77)),
    ("right_knee", "right_hip", (153, 255, 204)),
    ("right_hip", "pelvis", (255, 102, 0)),
    ("pelvis", "left_hip", (255, 102, 0)),
    ("left_hip", "left_knee", (255, 255, 77)),
    ("left_knee", "left_ankle", (191, 255, 128)),
    ("pelvis", "thorax", (255, 128, 0)),
    ("thorax", "upper_neck", (102, 204, 255)),
    ("upper_neck", "head_top", (51, 153, 255)),
    ("right_wrist", "right_elbow", (102, 255, 224)),
    ("right_elbow", "right_shoulder", (128, 229, 255)),
    ("right_shoulder", "thorax", (255, 0, 255)),
    ("thorax", "left_shoulder", (0, 255, 255)),
    ("left_shoulder", "left_elbow", (153, 255, 204)),
    ("left_elbow", "left_wrist", (153, 255, 153)),
)
MPII_KEYPOINT_NAMES: Tuple[str, ...] = tuple(row[0] for row in MPII_KEYPOINT_TABLE)

# CrowdPose's 14 keypoints in the order of its json files (COCO's without the 5 face keypoints, then
# head and neck); sigmas of its official evaluation (COCO's, head and neck 0.079).
CROWDPOSE_KEYPOINT_TABLE: Tuple[Tuple[str, str, float, Tuple[int, int, int], str], ...] = (
    *COCO_PERSON_KEYPOINT_TABLE[5:],
    ("head", "head", 0.079, (51, 153, 255), "upper"),
    ("neck", "neck", 0.079, (102, 204, 255), "upper"),
)
CROWDPOSE_SKELETON: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = (
    *COCO_PERSON_SKELETON[4:],  # without the 4 face edges
    ("head", "neck", (51, 153, 255)),
    ("neck", "left_shoulder", (102, 204, 255)),
    ("neck", "right_shoulder", (102, 204, 255)),
)
COCO_PERSON_OKS_SIGMAS: Tuple[float, ...] = tuple(row[2] for row in COCO_PERSON_KEYPOINT_TABLE)
# Every table's rows: a keypoint name means the same point (same sigma, same body half) in each.
KNOWN_KEYPOINT_ROWS: Tuple[Tuple, ...] = COCO_PERSON_KEYPOINT_TABLE + MPII_KEYPOINT_TABLE + CROWDPOSE_KEYPOINT_TABLE


def flip_pairs(table: Sequence[Tuple] = COCO_PERSON_KEYPOINT_TABLE) -> List[Tuple[str, str]]:
    """Each left/right pair of ``table`` once, as (left name, right name): ``keypoint_flip_map``."""
    return [(name, partner) for name, partner, *_ in table if name < partner]


def flip_indices(names: Sequence[str], flip_map: Sequence[Tuple[str, str]]) -> List[int]:
    """(K,) index of each keypoint's mirror partner in keypoint order ``names`` (itself when in no
    pair of ``flip_map``, Detectron2's ``keypoint_flip_map``): ``keypoints[:, indices]`` swaps left
    and right."""
    partner: Dict[str, str] = {}
    for left, right in flip_map:
        partner[left], partner[right] = right, left
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(partner) - set(index))
    if unknown:
        raise ValueError(f"keypoint_flip_map names keypoints {unknown} that are not in keypoint_names")
    return [index[partner.get(name, name)] for name in names]


# Side words of keypoint names (left_eye, L_Eye, eye.l, LeftEye) and the word of the other side.
_SIDE_WORDS = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _same_case(word: str, like: str) -> str:
    """``word`` in the case of ``like`` (LEFT, Left or left)."""
    return word.upper() if like.isupper() else word.capitalize() if like[:1].isupper() else word


def _mirror_names(name: str) -> List[str]:
    """The names a keypoint named ``name`` would have on the other side: each side word between
    separators (``_``, ``-``, ``.``, space: L_Eye -> R_Eye, eye.l -> eye.r) or "left" / "right"
    anywhere (LeftEye -> RightEye) swapped for the other side's, in the same case."""
    parts = re.split(r"([_\-.\s]+)", name)
    mirrors = [
        "".join(parts[:i] + [_same_case(_SIDE_WORDS[part.lower()], part)] + parts[i + 1 :])
        for i, part in enumerate(parts)
        if part.lower() in _SIDE_WORDS
    ]
    for match in re.finditer("left|right", name, re.IGNORECASE):
        side = _same_case(_SIDE_WORDS[match.group().lower()], match.group())
        mirrors.append(name[: match.start()] + side + name[match.end() :])
    return mirrors


def unpaired_mirror_names(names: Sequence[str], flip_map: Sequence[Sequence[str]]) -> List[Tuple[str, str]]:
    """Pairs of ``names`` named as left/right mirrors of each other (:func:`_mirror_names`) that
    ``flip_map`` does not pair, in keypoint order: a horizontal flip (training augmentation, flip
    test) would keep each on the other's point."""
    pairs = {frozenset(pair) for pair in flip_map}
    index = {name: i for i, name in enumerate(names)}
    found = {
        tuple(sorted((name, mirror), key=index.get))
        for name in names
        for mirror in _mirror_names(name)
        if mirror in index and mirror != name and frozenset((name, mirror)) not in pairs
    }
    return sorted(found, key=lambda pair: (index[pair[0]], index[pair[1]]))


def warn_unpaired_mirrors(
    names: Sequence[str], flip_map: Sequence[Sequence[str]], where: str, flip_field: str, remedy: str = ""
) -> None:
    """Logs a warning naming the keypoints of ``names`` (``where``: whose, in words) named as
    left/right mirrors (:func:`unpaired_mirror_names`) that ``flip_map`` (``flip_field``: its name
    for the user) does not pair; ``remedy`` ends the message."""
    unpaired = unpaired_mirror_names(names, flip_map)
    if unpaired:
        logger.warning(
            "%s: keypoints %s are named as left/right mirrors but %s does not pair them: a horizontal flip "
            "(INPUT.CROP_AUG.FLIP_PROB, TEST.FLIP) keeps each on the other's point%s",
            where,
            [list(pair) for pair in unpaired],
            flip_field,
            remedy,
        )


def name_flip_indices(names: Sequence[str]) -> List[int]:
    """``flip_indices`` of ``names`` with the pairs named as left/right mirrors
    (:func:`unpaired_mirror_names`: the tables' left_x / right_x, and L_X / R_X, x.l / x.r, LeftX /
    RightX), a name in at most one pair (the first)."""
    pairs, paired = [], set()
    for pair in unpaired_mirror_names(names, []):
        if not paired & set(pair):
            pairs.append(pair)
            paired.update(pair)
    return flip_indices(names, pairs)


# (K,) mirror partner of each COCO person keypoint (keypoint order of the table).
COCO_PERSON_FLIP_INDICES: Tuple[int, ...] = tuple(name_flip_indices(COCO_PERSON_KEYPOINT_NAMES))


def _table_column(names: Sequence[str], column: int, table: Sequence[Tuple], missing: str) -> List:
    """Column ``column`` of the table row of each of ``names``; a ConfigError ``missing`` (formatted
    with the names the table lacks) otherwise."""
    values = {row[0]: row[column] for row in table}
    unknown = [name for name in names if name not in values]
    if unknown:
        raise ConfigError(missing.format(unknown))
    return [values[name] for name in names]


def upper_body_mask(names: Sequence[str], table: Sequence[Tuple] = KNOWN_KEYPOINT_ROWS) -> List[bool]:
    """(K,) whether each keypoint of ``names`` is in the table's upper body half; a ValueError names
    the keypoints the table lacks."""
    missing = (
        "keypoints {} have no body half in the keypoint tables (depotr/data/keypoint_metadata.py): "
        "the half-body augmentation needs one; switch it off with INPUT.CROP_AUG.HALF_BODY_PROB 0"
    )
    return [half == "upper" for half in _table_column(names, 4, table, missing)]


def person_metadata(
    names: Sequence[str], flip_map: Sequence[Sequence[str]], rules: Sequence[Tuple]
) -> Dict[str, object]:
    """Detectron2 ``MetadataCatalog`` fields of one "person" class with keypoints ``names``, flip
    pairs ``flip_map`` and skeleton edges ``rules`` (name, name, (r, g, b))."""
    return {
        "thing_classes": ["person"],
        "keypoint_names": list(names),
        "keypoint_flip_map": [tuple(pair) for pair in flip_map],
        "keypoint_connection_rules": [tuple(edge) for edge in rules],
    }


def coco_person_metadata() -> Dict[str, object]:
    """``MetadataCatalog`` fields of COCO's 17 person keypoints (also the synthetic persons')."""
    return person_metadata(COCO_PERSON_KEYPOINT_NAMES, flip_pairs(), COCO_PERSON_SKELETON)


def mpii_person_metadata() -> Dict[str, object]:
    """``MetadataCatalog`` fields of MPII's 16 person keypoints."""
    return person_metadata(MPII_KEYPOINT_NAMES, flip_pairs(MPII_KEYPOINT_TABLE), MPII_SKELETON)


@dataclass(frozen=True)
class KeypointMetadata:
    """The K keypoints a model predicts (:func:`keypoint_metadata_from_config`): (K,) ``names`` in
    output order, ``flip_map`` (left/right name pairs), (K,) ``flip_indices`` (mirror partner of
    each) and (K,) ``oks_sigmas``."""

    names: Tuple[str, ...]
    flip_map: Tuple[Tuple[str, str], ...]
    flip_indices: Tuple[int, ...]
    oks_sigmas: Tuple[float, ...]


def keypoint_metadata_from_config(cfg) -> KeypointMetadata:
    """The model's keypoints from the config alone: names and pairs ``MODEL.DEPOTR.KEYPOINT_NAMES``
    / ``KEYPOINT_FLIP_MAP`` (both empty: COCO's 17 and 8; ``NUM_KEYPOINTS`` names), sigmas
    ``TEST.KEYPOINT_OKS_SIGMAS`` (empty: the tables'). Registered datasets of ``DATASETS.TRAIN`` /
    ``TEST`` with keypoint metadata are checked against them, never read.

    Raises:
        ConfigError (a ValueError; one ``error:`` line from the command-line tools) naming the
        config key or the dataset and field that is wrong.
    """
    model = cfg.MODEL.DEPOTR
    names, flip_map = tuple(model.KEYPOINT_NAMES), tuple(tuple(pair) for pair in model.KEYPOINT_FLIP_MAP)
    if not names:
        if flip_map:
            raise ConfigError(
                "MODEL.DEPOTR.KEYPOINT_FLIP_MAP is set but MODEL.DEPOTR.KEYPOINT_NAMES is empty; "
                "set both, or neither for the COCO person keypoints"
            )
        if model.KEYPOINT_SKELETON:
            raise ConfigError(
                "MODEL.DEPOTR.KEYPOINT_SKELETON is set but MODEL.DEPOTR.KEYPOINT_NAMES is empty (COCO's keypoints, "
                "drawn with COCO's skeleton); set KEYPOINT_NAMES too"
            )
        names, flip_map = COCO_PERSON_KEYPOINT_NAMES, tuple(flip_pairs())
    if len(set(names)) != len(names):
        raise ConfigError(f"MODEL.DEPOTR.KEYPOINT_NAMES {list(names)} has repeated names")
    if len(names) != model.NUM_KEYPOINTS:
        raise ConfigError(
            f"{len(names)} keypoint names (MODEL.DEPOTR.KEYPOINT_NAMES, empty: the COCO 17) but "
            f"MODEL.DEPOTR.NUM_KEYPOINTS is {model.NUM_KEYPOINTS}"
        )
    bad_pairs = [list(pair) for pair in flip_map if len(pair) != 2]
    if bad_pairs:
        raise ConfigError(f"MODEL.DEPOTR.KEYPOINT_FLIP_MAP entries must be pairs of names, got {bad_pairs}")
    try:
        indices = tuple(flip_indices(names, flip_map))
    except ValueError as e:
        raise ConfigError(f"MODEL.DEPOTR.KEYPOINT_FLIP_MAP: {e}") from e
    bad_edges = [list(e) for e in model.KEYPOINT_SKELETON if len(e) not in (2, 3) or not set(e[:2]) <= set(names)]
    bad_edges += [list(e) for e in model.KEYPOINT_SKELETON if len(e) == 3 and not is_colour(e[2])]
    if bad_edges:
        raise ConfigError(
            f"MODEL.DEPOTR.KEYPOINT_SKELETON edges must be [name, name] or [name, name, [r, g, b]] (0-255) of "
            f"the keypoints {list(names)}, got {bad_edges}"
        )
    sigmas = _oks_sigmas(cfg, names)
    _check_datasets(cfg, names, flip_map, indices, sigmas)
    return KeypointMetadata(names, flip_map, indices, sigmas)


def is_colour(value: object) -> bool:
    """Whether ``value`` is an (r, g, b) colour: a list or tuple of 3 ints (not bools) in 0-255."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    )


def _check_datasets(
    cfg, names: Sequence[str], flip_map: Sequence[Tuple[str, str]], indices: Sequence[int], sigmas: Sequence[float]
) -> None:
    """A ConfigError naming the first registered dataset of the config whose keypoint names, flip
    indices or OKS sigmas (where it has them) differ. Each dataset is compared on its own:
    Detectron2's ``create_keypoint_hflip_indices`` of several compares raw values (tuples differ
    from lists)."""
    for dataset in dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]):
        if dataset not in DatasetCatalog:
            continue
        metadata = MetadataCatalog.get(dataset)
        if not (hasattr(metadata, "keypoint_names") and hasattr(metadata, "keypoint_flip_map")):
            continue
        if tuple(metadata.keypoint_names) != tuple(names):
            raise ConfigError(
                f"dataset {dataset!r} has keypoint_names {list(metadata.keypoint_names)}, the config's "
                f"keypoints (MODEL.DEPOTR.KEYPOINT_NAMES, empty: COCO's) are {list(names)}"
            )
        try:
            same = tuple(create_keypoint_hflip_indices(dataset)) == tuple(indices)
        except ValueError:  # a flip map naming keypoints the dataset does not have
            same = False
        if not same:
            raise ConfigError(
                f"dataset {dataset!r} has keypoint_flip_map {[list(p) for p in metadata.keypoint_flip_map]}, "
                "which differs from the config's (MODEL.DEPOTR.KEYPOINT_FLIP_MAP, empty: COCO's) "
                f"{[list(pair) for pair in flip_map]}"
            )
        registered = metadata.get("keypoint_oks_sigmas", None)
        if registered is not None and not np.allclose(registered, sigmas, rtol=0.0, atol=1e-6):
            raise ConfigError(
                f"dataset {dataset!r} has keypoint_oks_sigmas {[float(s) for s in registered]}, the config's "
                f"(TEST.KEYPOINT_OKS_SIGMAS, empty: the keypoint tables') are {list(sigmas)}: set "
                "TEST.KEYPOINT_OKS_SIGMAS to the dataset's"
            )


def _oks_sigmas(cfg, names: Sequence[str]) -> Tuple[float, ...]:
    """``TEST.KEYPOINT_OKS_SIGMAS``, else the keypoint tables' (COCO, MPII, CrowdPose) sigmas of ``names``."""
    sigmas = cfg.TEST.KEYPOINT_OKS_SIGMAS
    if len(sigmas) and len(sigmas) != len(names):
        raise ConfigError(f"TEST.KEYPOINT_OKS_SIGMAS has {len(sigmas)} values for {len(names)} keypoints")
    if not len(sigmas):
        missing = "keypoints {} have no OKS sigma in the keypoint table: set TEST.KEYPOINT_OKS_SIGMAS"
        sigmas = _table_column(names, 2, KNOWN_KEYPOINT_ROWS, missing)
    return tuple(float(s) for s in sigmas)
