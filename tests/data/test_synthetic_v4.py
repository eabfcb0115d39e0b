"""Generator version 4's properties: truncation by the border, COCO visibility flags under
occlusion, overlapping crowds, COCO's size bins, determinism; the per-person attributes it writes
(``depotr.data.person_bins``) checked against plain reference computations."""

import numpy as np
import pytest

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from depotr.data.person_bins import crowd_indices, person_bins
from depotr.data.synthetic_v4 import render_synthetic_image_v4

K = len(COCO_PERSON_KEYPOINT_NAMES)
IDX = {n: i for i, n in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
S = 256
NUM_IMAGES = 80


@pytest.fixture(scope="module")
def rendered():
    """[(image, annotations)] of 80 images of generator version 4."""
    return [render_synthetic_image_v4(5, 0, i, S) for i in range(NUM_IMAGES)]


def _kps(anno):
    return np.asarray(anno["keypoints"], dtype=np.float64).reshape(K, 3)


def _persons(rendered):
    return [a for _, annos in rendered for a in annos]


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_truncated_persons_are_cut_by_the_border_and_their_outside_keypoints_unlabelled(rendered):
    persons = _persons(rendered)
    cut = [a for a in persons if a["synthetic"]["truncated"]]
    assert 0.1 <= len(cut) / len(persons) <= 0.6, len(cut) / len(persons)
    for anno in cut:  # a truncated figure's box reaches the border (a keypoint lies beyond it)
        x, y, w, h = anno["bbox"]
        assert x == 0 or y == 0 or x + w == S or y + h == S, anno["bbox"]
        assert anno["num_keypoints"] < K
    # Close-ups are heads and shoulders: the head in the image, ankles and knees below it (v = 0).
    closeups = [a for a in persons if a["synthetic"]["framing"] == "closeup"]
    assert len(closeups) >= 5
    for anno in closeups:
        kp = _kps(anno)
        legs = [IDX[f"{s}_{j}"] for s in ("left", "right") for j in ("knee", "ankle")]
        assert (kp[legs, 2] == 0).all() and (kp[legs, :2] == 0).all(), kp[legs]
        assert anno["bbox"][1] + anno["bbox"][3] == S  # cut by the bottom border
    uppers = [a for a in persons if a["synthetic"]["framing"] == "upper"]
    ankles = [IDX["left_ankle"], IDX["right_ankle"]]
    # Upper bodies are cut between the knees and the waist (sitting figures may keep their feet).
    assert len(uppers) >= 5 and np.mean([(_kps(a)[ankles, 2] == 0).all() for a in uppers]) >= 0.7
    shoulders = [IDX["left_shoulder"], IDX["right_shoulder"]]
    assert np.mean([(_kps(a)[shoulders, 2] > 0).any() for a in closeups + uppers]) >= 0.8


def test_occluded_keypoints_have_v1_and_a_position_in_the_image(rendered):
    """v = 1 keypoints are inside the image with their position; keypoints inside the box of a
    person drawn in front (a larger one) are occluded far more often than the others."""
    flags = {"covered": [], "free": []}
    for _, annos in rendered:
        for anno in annos:
            kp = _kps(anno)
            occluded = kp[kp[:, 2] == 1]
            assert ((occluded[:, :2] >= 0) & (occluded[:, :2] <= S - 1)).all()
            assert (occluded[:, :2] != 0).any(1).all()
            stature = anno["synthetic"]["stature_px"]
            front = [b["bbox"] for b in annos if b["synthetic"]["stature_px"] > stature]
            for x, y, v in kp[kp[:, 2] > 0]:
                covered = any(bx <= x < bx + bw and by <= y < by + bh for bx, by, bw, bh in front)
                flags["covered" if covered else "free"].append(v == 1)
    assert len(flags["covered"]) >= 100, len(flags["covered"])
    assert np.mean(flags["covered"]) > np.mean(flags["free"]) + 0.1, {k: np.mean(v) for k, v in flags.items()}
    shares = np.array([a["synthetic"]["occluded_fraction"] for a in _persons(rendered)])
    assert (shares > 0.5).mean() >= 0.05 and (shares == 0).mean() >= 0.1


def test_crowds_overlap_and_crowd_index_matches_a_plain_count(rendered):
    multi = [annos for _, annos in rendered if len(annos) > 1]
    overlapping = [
        annos for annos in multi if any(_iou(a["bbox"], b["bbox"]) > 0.3 for a in annos for b in annos if a is not b)
    ]
    assert len(overlapping) >= 0.15 * len(multi), (len(overlapping), len(multi))
    for annos in multi:
        for i, anno in enumerate(annos):
            x, y, w, h = anno["bbox"]
            own = (_kps(anno)[:, 2] > 0).sum()
            others = sum(
                int(v > 0 and x <= px <= x + w and y <= py <= y + h)
                for j, other in enumerate(annos)
                if j != i
                for px, py, v in _kps(other)
            )
            expected = others / own if own else 0.0
            assert anno["synthetic"]["crowd_index"] == pytest.approx(expected, abs=1e-4)
    index = np.array([a["synthetic"]["crowd_index"] for a in _persons(rendered)])
    assert (index > 0.8).mean() >= 0.05 and (index <= 0.1).mean() >= 0.3


def test_crowd_index_reference_example():
    """Two persons, boxes of 10 x 10: B's box holds 2 of A's 4 labelled keypoints."""
    a = np.zeros((K, 3))
    a[:4] = [[1, 1, 2], [2, 2, 2], [12, 12, 1], [14, 14, 2]]
    b = np.zeros((K, 3))
    b[:2] = [[13, 13, 2], [15, 15, 2]]
    index = crowd_indices(np.stack([a, b]), np.array([[0, 0, 10, 10], [11, 11, 10, 10]]))
    np.testing.assert_allclose(index, [0 / 4, 2 / 2])


def test_sizes_cover_the_coco_bins(rendered):
    gt = {
        "images": [{"id": i, "width": S, "height": S} for i in range(NUM_IMAGES)],
        "annotations": [dict(a, image_id=i) for i, (_, annos) in enumerate(rendered) for a in annos],
    }
    gt["annotations"] = [dict(a, id=k + 1) for k, a in enumerate(gt["annotations"])]
    areas = np.array([a["area"] for a in gt["annotations"]])
    for low, high in ((0, 32**2), (32**2, 96**2), (96**2, np.inf)):
        assert ((areas >= low) & (areas < high)).mean() >= 0.05, (low, high)
    bins = person_bins(gt)
    for attribute in ("size", "truncation", "occlusion", "crowd"):
        names = {b[attribute] for b in bins.values()}
        assert len(names) >= 2, (attribute, names)
    counts = np.bincount([len(annos) for _, annos in rendered])
    assert counts[1] > 0 and counts[3:].sum() > 0 and max(len(a) for _, a in rendered) <= 6


def test_same_seed_same_image_other_seed_other_image():
    image, annos = render_synthetic_image_v4(5, 0, 3, 128)
    again, annos_again = render_synthetic_image_v4(5, 0, 3, 128)
    np.testing.assert_array_equal(image, again)
    assert annos == annos_again
    other, _ = render_synthetic_image_v4(6, 0, 3, 128)
    val, _ = render_synthetic_image_v4(5, 1, 3, 128)
    assert not np.array_equal(image, other) and not np.array_equal(image, val)
