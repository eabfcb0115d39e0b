"""The embedded synthetic dataset: COCO validity, visibility rules (generator versions 3 and 4),
determinism (caching: test_synthetic_cache.py; version 4's own properties: test_synthetic_v4.py)."""

import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON, flip_pairs
from depotr.data.synthetic import render_synthetic_image
from depotr.data.synthetic_v4 import render_synthetic_image_v4

SMALL_NUM_IMAGES = 12  # as in conftest.small_synthetic (seed 7)
K = len(COCO_PERSON_KEYPOINT_NAMES)
IDX = {n: i for i, n in enumerate(COCO_PERSON_KEYPOINT_NAMES)}


def _kps(anno):
    return np.asarray(anno["keypoints"], dtype=np.float64).reshape(K, 3)


@pytest.fixture(scope="module")
def rendered():
    """60 images rendered in memory: [(image, annotations)]."""
    return [render_synthetic_image(3, 0, i, 256) for i in range(60)]


@pytest.fixture(params=["small_synthetic", "small_synthetic_v4"], ids=["v3", "v4"])
def any_small_synthetic(request):
    """The small split of conftest, drawn by generator version 3 or 4."""
    return request.getfixturevalue(request.param)


def test_json_loads_with_pycocotools(any_small_synthetic):
    _, paths, coco = any_small_synthetic
    api = COCO(paths["json_file"])
    assert len(api.getImgIds()) == SMALL_NUM_IMAGES
    assert api.getCatIds(catNms=["person"]) == [1]
    assert len(api.getAnnIds()) >= SMALL_NUM_IMAGES
    ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ids)) == len(ids) and min(ids) >= 1  # COCOeval treats id 0 as "unmatched"
    for img in coco["images"]:
        assert os.path.isfile(os.path.join(paths["image_root"], img["file_name"]))
    for anno in coco["annotations"]:
        assert anno["category_id"] == 1 and anno["iscrowd"] == 0 and len(anno["keypoints"]) == 3 * K
        assert anno["area"] > 0


def test_keypoint_visibility_rules(any_small_synthetic):
    _, _, coco = any_small_synthetic
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for anno in coco["annotations"]:
        w, h = sizes[anno["image_id"]]
        kp = _kps(anno)
        v = kp[:, 2]
        assert set(v.tolist()) <= {0.0, 1.0, 2.0}
        labelled = v > 0
        assert ((kp[labelled, 0] >= 0) & (kp[labelled, 0] <= w - 1)).all(), anno["id"]
        assert ((kp[labelled, 1] >= 0) & (kp[labelled, 1] <= h - 1)).all(), anno["id"]
        unlabelled_zero = (kp[:, 0] == 0) & (kp[:, 1] == 0)
        np.testing.assert_array_equal(~labelled, unlabelled_zero, err_msg=f"annotation {anno['id']}")
        assert anno["num_keypoints"] == int(labelled.sum())


def test_bbox_inside_image_and_around_keypoints(any_small_synthetic):
    _, _, coco = any_small_synthetic
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for anno in coco["annotations"]:
        w, h = sizes[anno["image_id"]]
        x, y, bw, bh = anno["bbox"]
        assert x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
        assert anno["area"] <= bw * bh
        kp = _kps(anno)
        # Version 3's box is the figure's full outline, around all its labelled keypoints; version
        # 4's that of its visible pixels (COCO's), around the visible ones (v = 2) only.
        lab = kp[kp[:, 2] == 2] if "framing" in anno["synthetic"] else kp[kp[:, 2] > 0]
        # Keypoints are pixel indices, the box is continuous: pixel i lies in [x, x + w).
        assert ((lab[:, 0] >= x - 1) & (lab[:, 0] <= x + bw) & (lab[:, 1] >= y - 1) & (lab[:, 1] <= y + bh)).all()


def test_categories_match_keypoint_table(small_synthetic):
    _, _, coco = small_synthetic
    (cat,) = coco["categories"]
    assert cat["name"] == "person" and cat["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES)
    expected = [[IDX[a] + 1, IDX[b] + 1] for a, b, _ in COCO_PERSON_SKELETON]
    assert cat["skeleton"] == expected
    for left, right in flip_pairs():
        assert left.startswith("left_") and right == "right_" + left[len("left_") :]
        assert left in cat["keypoints"] and right in cat["keypoints"]


@pytest.mark.parametrize(
    "view, yaw_range, left_is_right_in_image",
    [("front", (-40.0, 40.0), True), ("back", (150.0, 210.0), False)],
    ids=["front_view_left_on_image_right", "back_view_left_on_image_left"],
)
@pytest.mark.parametrize("joint", ["shoulder", "hip"], ids=["shoulders", "hips"])
def test_left_right_follow_the_view(rendered, view, yaw_range, left_is_right_in_image, joint):
    """A figure facing the camera shows its left side on the image's right, and vice versa."""
    checked = 0
    for _, annos in rendered:
        for anno in annos:
            syn = anno["synthetic"]
            yaw = syn["yaw_deg"] % 360 if view == "back" else syn["yaw_deg"]
            if not (yaw_range[0] <= yaw <= yaw_range[1]) or abs(syn["rotation_deg"]) > 15:
                continue
            kp = _kps(anno)
            left, right = kp[IDX[f"left_{joint}"]], kp[IDX[f"right_{joint}"]]
            if left[2] == 0 or right[2] == 0:
                continue
            checked += 1
            assert (left[0] > right[0]) == left_is_right_in_image, anno
    assert checked >= 3


def test_all_visibility_kinds_occur(rendered):
    v = np.concatenate([_kps(a)[:, 2] for _, annos in rendered for a in annos])
    counts = {k: int((v == k).sum()) for k in (0, 1, 2)}
    assert all(c > 0 for c in counts.values()), counts
    assert counts[2] > counts[1]
    persons = [len(annos) for _, annos in rendered]
    assert min(persons) >= 1 and max(persons) <= 4 and max(persons) >= 3


def test_figures_are_large(rendered):
    statures = [a["synthetic"]["stature_px"] for _, annos in rendered for a in annos]
    assert min(statures) >= 0.4 * 256 - 1e-6 and max(statures) <= 0.9 * 256 + 1e-6


def test_image_does_not_depend_on_what_was_rendered_before():
    """Versions 3 and 4: the same bytes before and after a larger image was rendered in the
    process (sizes that no other test renders, so that the larger one is the largest so far)."""
    renderers = (render_synthetic_image, render_synthetic_image_v4)
    first = [render(0, 1, 5, 72) for render in renderers]
    render_synthetic_image(0, 1, 6, 600)
    changed = []
    for render, (image, annos) in zip(renderers, first):
        again, annos_again = render(0, 1, 5, 72)
        if image.tobytes() != again.tobytes() or annos != annos_again:
            changed.append(render.__name__)
    assert changed == []


def test_train_and_val_differ():
    train, _ = render_synthetic_image(0, 0, 0)
    val, _ = render_synthetic_image(0, 1, 0)
    assert not np.array_equal(train, val)
