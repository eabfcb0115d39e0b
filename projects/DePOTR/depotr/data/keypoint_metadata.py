"""The one table of COCO person keypoint metadata.

Keypoint names, left/right swap partners, skeleton edges, OKS sigmas and drawing colours live
here and nowhere else (as Detectron2's ``builtin_meta.py`` and mmpose's ``coco.py`` do). Flip
indices for the mapper, the flip test and the evaluator are derived from this table.
"""
from typing import Dict, List, Sequence, Tuple

# (name, swap partner, OKS sigma, RGB colour). Sigmas are the COCO standard (Ronchi & Perona).
COCO_PERSON_KEYPOINT_TABLE: Tuple[Tuple[str, str, float, Tuple[int, int, int]], ...] = (
    ("nose", "nose", 0.026, (102, 204, 255)),
    ("left_eye", "right_eye", 0.025, (51, 153, 255)),
    ("right_eye", "left_eye", 0.025, (102, 0, 204)),
    ("left_ear", "right_ear", 0.035, (51, 102, 255)),
    ("right_ear", "left_ear", 0.035, (153, 102, 255)),
    ("left_shoulder", "right_shoulder", 0.079, (255, 128, 0)),
    ("right_shoulder", "left_shoulder", 0.079, (153, 255, 204)),
    ("left_elbow", "right_elbow", 0.072, (128, 229, 255)),
    ("right_elbow", "left_elbow", 0.072, (153, 255, 153)),
    ("left_wrist", "right_wrist", 0.062, (102, 255, 224)),
    ("right_wrist", "left_wrist", 0.062, (255, 102, 0)),
    ("left_hip", "right_hip", 0.107, (255, 255, 77)),
    ("right_hip", "left_hip", 0.107, (153, 255, 204)),
    ("left_knee", "right_knee", 0.087, (191, 255, 128)),
    ("right_knee", "left_knee", 0.087, (255, 195, 77)),
    ("left_ankle", "right_ankle", 0.089, (0, 255, 255)),
    ("right_ankle", "left_ankle", 0.089, (255, 0, 255)),
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
