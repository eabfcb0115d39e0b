"""The one table of COCO person keypoint metadata.

Keypoint names, left/right swap partners, OKS sigmas, drawing colours, body halves and skeleton
edges live here and nowhere else (as Detectron2's ``builtin_meta.py`` and mmpose's ``coco.py``
do). Flip indices for the mapper, the flip test and the evaluator, and the upper-body mask of the
half-body augmentation are derived from this table.
"""
from typing import Dict, List, Sequence, Tuple

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
COCO_PERSON_OKS_SIGMAS: Tuple[float, ...] = tuple(row[2] for row in COCO_PERSON_KEYPOINT_TABLE)


def flip_pairs(table: Sequence[Tuple] = COCO_PERSON_KEYPOINT_TABLE) -> List[Tuple[str, str]]:
    """Returns each left/right pair once as (left name, right name), for Detectron2's
    ``keypoint_flip_map`` metadata."""
    return [(name, partner) for name, partner, *_ in table if name < partner]


def flip_indices(names: Sequence[str], flip_map: Sequence[Tuple[str, str]]) -> List[int]:
    """Returns, for keypoint order ``names``, the index of each keypoint's mirror partner.

    ``keypoints[:, flip_indices(...)]`` swaps left and right. ``flip_map`` is Detectron2's
    ``keypoint_flip_map`` (pairs of names); keypoints not in any pair map to themselves.
    """
    partner: Dict[str, str] = {}
    for left, right in flip_map:
        partner[left], partner[right] = right, left
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(partner) - set(index))
    if unknown:
        raise ValueError(f"keypoint_flip_map names keypoints {unknown} that are not in keypoint_names")
    return [index[partner.get(name, name)] for name in names]


def upper_body_mask(names: Sequence[str], table: Sequence[Tuple] = COCO_PERSON_KEYPOINT_TABLE) -> List[bool]:
    """Returns, for keypoint order ``names``, whether each keypoint belongs to the upper body
    (the table's body half). Raises a ValueError naming the keypoints the table lacks."""
    half = {row[0]: row[4] for row in table}
    unknown = [name for name in names if name not in half]
    if unknown:
        raise ValueError(
            f"keypoints {unknown} have no body half in the keypoint table (depotr/data/keypoint_metadata.py)"
        )
    return [half[name] == "upper" for name in names]


def coco_person_metadata() -> Dict[str, object]:
    """Detectron2 ``MetadataCatalog`` fields for COCO person keypoints (and the synthetic
    persons, which use the same 17 keypoints)."""
    return {
        "thing_classes": ["person"],
        "keypoint_names": list(COCO_PERSON_KEYPOINT_NAMES),
        "keypoint_flip_map": flip_pairs(),
        "keypoint_connection_rules": [tuple(edge) for edge in COCO_PERSON_SKELETON],
        "keypoint_oks_sigmas": list(COCO_PERSON_OKS_SIGMAS),
    }
