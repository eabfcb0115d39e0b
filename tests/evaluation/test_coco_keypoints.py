"""Detectron2's COCOEvaluator, as DePOTR builds it, on hand-made keypoint results."""

import json

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances

from depotr.data.custom import unregister_dataset
from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_OKS_SIGMAS
from depotr.engine.compat import has_fast_coco_eval
from depotr.evaluation import build_keypoint_evaluator


def _write_coco_keypoints_json(path, rng: np.random.Generator, num_images=3, persons_per_image=3):
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 480, "width": 640})
        for p in range(persons_per_image):
            x0, y0 = 40 + 190 * p, 60 + rng.uniform(0, 40)
            w, h = 150.0, 300.0
            xs = rng.uniform(x0, x0 + w, 17)
            ys = rng.uniform(y0, y0 + h, 17)
            v = rng.choice([1, 2], 17)
            keypoints = np.stack([xs, ys, v], 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "keypoints": keypoints.round(2).reshape(-1).tolist(),
                    "num_keypoints": 17,
                }
            )
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINT_NAMES), "skeleton": []}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return annotations


@pytest.fixture
def keypoint_dataset(tmp_path):
    name = f"depotr_test_eval_{tmp_path.name}"
    annotations = _write_coco_keypoints_json(tmp_path / "gt.json", np.random.default_rng(0))
    register_coco_instances(name, {}, str(tmp_path / "gt.json"), str(tmp_path))
    # Loading sets the metadata's category-id mapping, as the test data loader would.
    assert len(DatasetCatalog.get(name)) == 3
    yield name, annotations
    unregister_dataset(name)


def _evaluate(dataset_name, annotations, keypoints_per_annotation, use_fast_impl=None):
    evaluator = build_keypoint_evaluator(
        dataset_name, COCO_PERSON_OKS_SIGMAS, distributed=False, use_fast_impl=use_fast_impl
    )
    evaluator.reset()
    image_ids = sorted({a["image_id"] for a in annotations})
    for image_id in image_ids:
        rows = [i for i, a in enumerate(annotations) if a["image_id"] == image_id]
        boxes = torch.tensor([annotations[i]["bbox"] for i in rows], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        keypoints = torch.tensor(np.stack([keypoints_per_annotation[i] for i in rows]), dtype=torch.float32)
        # Detectron2's convention: continuous coordinates = COCO json coordinates + 0.5; the
        # evaluator subtracts 0.5 when it writes COCO results.
        keypoints[:, :, :2] += 0.5
        instances = Instances((480, 640))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = torch.ones(len(rows))
        instances.pred_classes = torch.zeros(len(rows), dtype=torch.int64)
        instances.pred_keypoints = keypoints
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()["keypoints"]


def test_ground_truth_as_predictions_gives_ap_one(keypoint_dataset):
    name, annotations = keypoint_dataset
    keypoints = [np.array(a["keypoints"], dtype=np.float32).reshape(17, 3) for a in annotations]
    results = _evaluate(name, annotations, keypoints)
    assert results["AP"] == pytest.approx(100.0)
    assert results["AP50"] == pytest.approx(100.0)
    assert results["AP75"] == pytest.approx(100.0)


def test_shuffled_predictions_give_low_ap(keypoint_dataset):
    name, annotations = keypoint_dataset
    rng = np.random.default_rng(1)
    keypoints = []
    for a in annotations:
        kpts = np.array(a["keypoints"], dtype=np.float32).reshape(17, 3)
        keypoints.append(kpts[rng.permutation(17)])  # each keypoint predicted at another's place
    results = _evaluate(name, annotations, keypoints)
    assert results["AP"] < 20.0


def _noisy_keypoints(annotations, seed):
    rng = np.random.default_rng(seed)
    keypoints = []
    for a in annotations:
        kpts = np.array(a["keypoints"], dtype=np.float32).reshape(17, 3)
        kpts[:, :2] += rng.normal(0, 6, (17, 2)).astype(np.float32)
        keypoints.append(kpts)
    return keypoints


def test_compiled_coco_evaluation_gives_the_python_metrics_or_a_clear_error(keypoint_dataset):
    """Where Detectron2 has its compiled evaluation (main built from source) it gives the Python
    evaluation's metrics; without it (the v0.6 route's stand-in) asking for it names the cause.
    One test for both, so that neither Detectron2 skips it."""
    name, annotations = keypoint_dataset
    if not has_fast_coco_eval():
        with pytest.raises(ValueError, match="C\\+\\+ extension"):
            build_keypoint_evaluator(name, COCO_PERSON_OKS_SIGMAS, distributed=False, use_fast_impl=True)
        return
    keypoints = _noisy_keypoints(annotations, seed=2)
    fast = _evaluate(name, annotations, keypoints, use_fast_impl=True)
    python = _evaluate(name, annotations, keypoints, use_fast_impl=False)
    assert 0 < python["AP"] < 100
    assert fast == pytest.approx(python, abs=1e-6, nan_ok=True)


@pytest.mark.parametrize("override", [False, True], ids=["table", "TEST.KEYPOINT_OKS_SIGMAS"])
def test_trainer_evaluator_takes_the_sigmas_of_the_configs_keypoints(keypoint_dataset, tmp_path, override):
    """A non-COCO keypoint set (5 of the table's, another order): the evaluator's sigmas are the
    table's for those names, or TEST.KEYPOINT_OKS_SIGMAS where set."""
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config
    from depotr.data.keypoint_metadata import COCO_PERSON_KEYPOINT_TABLE
    from depotr.engine import Trainer

    name, _ = keypoint_dataset
    names = ["right_ankle", "nose", "left_ankle", "left_wrist", "right_wrist"]
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEPOTR.NUM_KEYPOINTS = 5
    cfg.MODEL.DEPOTR.KEYPOINT_NAMES = names
    cfg.MODEL.DEPOTR.KEYPOINT_FLIP_MAP = [["left_ankle", "right_ankle"], ["left_wrist", "right_wrist"]]
    cfg.DATASETS.TEST = (name,)
    sigma_of = {row[0]: row[2] for row in COCO_PERSON_KEYPOINT_TABLE}
    expected = [sigma_of[n] for n in names]
    assert expected == [0.089, 0.026, 0.089, 0.062, 0.062]
    if override:
        expected = [0.1, 0.2, 0.1, 0.3, 0.3]
        cfg.TEST.KEYPOINT_OKS_SIGMAS = expected
    evaluator = Trainer.build_evaluator(cfg, name, output_folder=str(tmp_path))
    assert list(evaluator._kpt_oks_sigmas) == pytest.approx(expected)
