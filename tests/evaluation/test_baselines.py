"""The mean-pose baseline: the mean box-normalised training pose, placed in each gt box."""

import numpy as np
import pytest

from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES
from depotr.evaluation.baselines import mean_pose, mean_pose_baseline_metrics, mean_pose_results

K = len(COCO_PERSON_KEYPOINT_NAMES)


def _dataset(persons):
    """persons: [(bbox xywh, (K, 3) keypoints)] -> COCO dict, one image per person."""
    images, annotations = [], []
    for i, (bbox, kps) in enumerate(persons):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 400, "width": 400})
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": list(bbox),
                "area": float(bbox[2] * bbox[3]),
                "keypoints": np.asarray(kps, float).ravel().tolist(),
                "num_keypoints": int((np.asarray(kps)[:, 2] > 0).sum()),
            }
        )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": []}],
    }


def _pose(rng):
    kps = np.zeros((K, 3))
    kps[:, :2] = rng.uniform(0.1, 0.9, (K, 2))
    kps[:, 2] = 2
    return kps


def test_mean_pose_is_the_mean_of_labelled_box_normalised_keypoints():
    rng = np.random.default_rng(0)
    a, b = _pose(rng), _pose(rng)
    b[3, 2] = 0  # unlabelled: not counted
    boxes = [(10.0, 20.0, 100.0, 200.0), (50.0, 0.0, 40.0, 80.0)]
    persons = [(box, np.concatenate([p[:, :2] * box[2:] + box[:2], p[:, 2:]], 1)) for box, p in zip(boxes, (a, b))]
    expected = (a[:, :2] + b[:, :2]) / 2
    expected[3] = a[3, :2]
    np.testing.assert_allclose(mean_pose(_dataset(persons)), expected, atol=1e-12)


def test_a_shared_pose_scores_full_ap_and_a_wrong_one_zero():
    rng = np.random.default_rng(1)
    pose = _pose(rng)
    boxes = [(float(x), float(y), float(w), 2.0 * w) for x, y, w in rng.uniform(10, 150, (6, 3))]
    persons = [(box, np.concatenate([pose[:, :2] * box[2:] + box[:2], pose[:, 2:]], 1)) for box in boxes]
    data = _dataset(persons)
    assert mean_pose_baseline_metrics(data, data)["AP"] == pytest.approx(100.0)
    results = mean_pose_results(1.0 - pose[:, :2], data)  # the pose mirrored in both axes
    assert len(results) == 6 and all(r["score"] == 1.0 for r in results)
    mirrored = [(box, np.concatenate([(1.0 - pose[:, :2]) * box[2:] + box[:2], pose[:, 2:]], 1)) for box in boxes]
    assert mean_pose_baseline_metrics(_dataset(mirrored), data)["AP"] < 5.0


def test_a_keypoint_never_labelled_is_named():
    rng = np.random.default_rng(2)
    kps = _pose(rng)
    kps[COCO_PERSON_KEYPOINT_NAMES.index("left_ear"), 2] = 0
    with pytest.raises(ValueError, match="left_ear"):
        mean_pose(_dataset([((0.0, 0.0, 10.0, 10.0), kps)]))


def test_a_training_set_of_other_keypoints_is_refused():
    # before: 15 keypoints against 17 were a numpy broadcast error, and 17 other (or reordered)
    # keypoints gave a baseline of the wrong joints without a word
    rng = np.random.default_rng(3)
    data = _dataset([((10.0, 20.0, 100.0, 200.0), _pose(rng))])
    reordered = _dataset([((10.0, 20.0, 100.0, 200.0), _pose(rng))])
    reordered["categories"][0]["keypoints"] = list(COCO_PERSON_KEYPOINT_NAMES[::-1])
    with pytest.raises(ValueError, match=r"the baseline's training keypoints \['right_ankle', .*'nose'\] are not"):
        mean_pose_baseline_metrics(reordered, data)
    fewer = _dataset([((10.0, 20.0, 100.0, 200.0), _pose(rng)[:15])])
    fewer["categories"][0]["keypoints"] = list(COCO_PERSON_KEYPOINT_NAMES[:15])
    with pytest.raises(ValueError, match=r"are not the evaluated ground truth's \['nose'"):
        mean_pose_baseline_metrics(fewer, data)
