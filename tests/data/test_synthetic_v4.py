"""Generator version 4's properties: truncation by the border, COCO visibility flags under
occlusion, boxes and areas of the visible pixels (COCO's), overlapping crowds, COCO's size bins,
determinism; the per-person attributes it writes (``depotr.data.person_bins``) checked against
plain reference computations and against the label map the image was annotated from."""

import numpy as np
import pytest

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from depotr.data.person_bins import crowd_indices, person_bins
from depotr.data.synthetic_v4 import _render, render_synthetic_image_v4

K = len(COCO_PERSON_KEYPOINT_NAMES)
IDX = {n: i for i, n in enumerate(COCO_PERSON_KEYPOINT_NAMES)}
S = 256
NUM_IMAGES = 80
PARTS_PER_PERSON = 16  # the label map holds 1 + 16 * person + part, 255 for occluders, 0 for background


@pytest.fixture(scope="module")
def renderings():
    """80 images of generator version 4 with their label maps and figure layers (synthetic_v4._render)."""
    return [_render(5, 0, i, S) for i in range(NUM_IMAGES)]


@pytest.fixture(scope="module")
def rendered(renderings):
    """[(image, annotations)] of the 80 images."""
    return [(r.image, r.annotations) for r in renderings]


def _annotated(renderings):
    """(annotation, its visible pixels (S, S) bool, its figure's layer) of every annotated person."""
    for r in renderings:
        for anno, i in zip(r.annotations, r.person_index):
            visible = (r.labels >= 1 + PARTS_PER_PERSON * i) & (r.labels <= PARTS_PER_PERSON * (i + 1))
            yield anno, visible, r.layers[i]


def _reaches_border(layer):
    return bool(layer[0].any() or layer[-1].any() or layer[:, 0].any() or layer[:, -1].any())


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


def test_truncated_persons_are_cut_by_the_border_and_their_outside_keypoints_unlabelled(renderings, rendered):
    persons = _persons(rendered)
    cut = [a for a in persons if a["synthetic"]["truncated"]]
    assert 0.1 <= len(cut) / len(persons) <= 0.6, len(cut) / len(persons)
    # Close-ups are heads and shoulders: the head in the image, ankles and knees below it (v = 0).
    closeups = [(a, layer) for a, _, layer in _annotated(renderings) if a["synthetic"]["framing"] == "closeup"]
    assert len(closeups) >= 5
    for anno, layer in closeups:
        kp = _kps(anno)
        legs = [IDX[f"{s}_{j}"] for s in ("left", "right") for j in ("knee", "ankle")]
        assert (kp[legs, 2] == 0).all() and (kp[legs, :2] == 0).all(), kp[legs]
        assert layer[-1].any() and anno["synthetic"]["truncated"]  # cut by the bottom border
    uppers = [a for a in persons if a["synthetic"]["framing"] == "upper"]
    ankles = [IDX["left_ankle"], IDX["right_ankle"]]
    # Upper bodies are cut between the knees and the waist (sitting figures may keep their feet).
    assert len(uppers) >= 5 and np.mean([(_kps(a)[ankles, 2] == 0).all() for a in uppers]) >= 0.7
    shoulders = [IDX["left_shoulder"], IDX["right_shoulder"]]
    framed = [a for a, _ in closeups] + uppers
    assert np.mean([(_kps(a)[shoulders, 2] > 0).any() for a in framed]) >= 0.8


def test_truncated_is_a_keypoint_outside_or_the_figure_reaching_the_border(renderings):
    """A figure whose pixels (hidden ones included) reach an edge row / column is truncated even
    with all its joints inside; otherwise only a keypoint outside the image (unlabelled) makes it so."""
    reaching = 0
    for anno, _, layer in _annotated(renderings):
        if _reaches_border(layer):
            reaching += 1
            assert anno["synthetic"]["truncated"], anno
        elif anno["synthetic"]["truncated"]:
            assert anno["num_keypoints"] < K, anno
    assert reaching >= 20, reaching


def test_every_person_has_50_visible_pixels_and_box_and_area_of_them(renderings):
    """As COCO's segments: ``area`` counts and ``bbox`` bounds the person's pixels in the final label
    map (not those hidden by occluders or nearer persons); persons with fewer than 50 are left out."""
    hidden = 0
    for anno, visible, layer in _annotated(renderings):
        assert anno["area"] == int(visible.sum()) >= 50
        ys, xs = np.nonzero(visible)
        assert anno["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        hidden += int((layer > 0).sum()) > anno["area"]
    assert hidden >= 20, hidden  # the cases where the full outline would differ occur
    for r in renderings:  # the persons left out are those hardly visible
        for i in set(range(len(r.layers))) - set(r.person_index):
            assert ((r.labels > PARTS_PER_PERSON * i) & (r.labels <= PARTS_PER_PERSON * (i + 1))).sum() < 50


def test_visible_keypoints_lie_on_own_visible_pixels_and_labelled_ones_inside_the_image(renderings):
    """v = 2 keypoints lie on the person's visible pixels (so in its box); occluded ones (v = 1)
    lie inside the image but may lie outside the box of the visible pixels, as in COCO."""
    outside_box = 0
    for anno, visible, _ in _annotated(renderings):
        kp = _kps(anno)
        labelled = kp[kp[:, 2] > 0]
        assert ((labelled[:, :2] >= 0) & (labelled[:, :2] <= S - 1)).all(), anno
        for x, y, v in labelled:
            on_own = bool(visible[int(round(y)), int(round(x))])
            assert on_own or v == 1, (anno, x, y)
        x0, y0, w, h = anno["bbox"]
        in_box = (
            (kp[:, 0] >= x0 - 0.5) & (kp[:, 0] <= x0 + w - 0.5) & (kp[:, 1] >= y0 - 0.5) & (kp[:, 1] <= y0 + h - 0.5)
        )
        assert in_box[kp[:, 2] == 2].all(), anno
        outside_box += int((~in_box & (kp[:, 2] == 1)).sum())
    assert outside_box > 0


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
    rendering = _render(5, 0, 3, 128)  # what the tests above read is what the renderer returns
    np.testing.assert_array_equal(rendering.image, image)
    assert rendering.annotations == annos
    other, _ = render_synthetic_image_v4(6, 0, 3, 128)
    val, _ = render_synthetic_image_v4(5, 1, 3, 128)
    assert not np.array_equal(image, other) and not np.array_equal(image, val)
