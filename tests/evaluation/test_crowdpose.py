"""CrowdPose evaluation (depotr.evaluation.crowdpose, xtcocotools' crowd mode) on a generated file,
against numbers computed by hand, through the registered dataset and the trainer's dispatch.
xtcocotools is a pinned dependency (tools/install.sh): without it these tests fail, not skip."""

import json

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances

from depotr.data import register_keypoint_dataset
from depotr.data.custom import unregister_dataset
from depotr.data.keypoint_metadata import CROWDPOSE_KEYPOINT_TABLE, CROWDPOSE_SKELETON, flip_pairs
from depotr.evaluation.crowdpose import CrowdPoseEvaluator, crowdpose_metrics

NAMES = [row[0] for row in CROWDPOSE_KEYPOINT_TABLE]
SIGMAS = [row[2] for row in CROWDPOSE_KEYPOINT_TABLE]
# One person per image; crowd index 0.1 (easy: < 0.2), 0.5 (medium), 0.9 (hard: >= 0.8).
CROWD_INDEX = [0.1, 0.5, 0.9]


@pytest.fixture
def crowdpose_file(tmp_path):
    rng = np.random.default_rng(0)
    images, annotations, keypoints = [], [], []
    for i, crowd in enumerate(CROWD_INDEX):
        xy = rng.uniform(60, 140, size=(14, 2))
        kps = np.concatenate([xy, np.full((14, 1), 2.0)], axis=1)
        keypoints.append(kps)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 200, "width": 200, "crowdIndex": crowd})
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.zeros((200, 200, 3), np.uint8))  # the dataset's loader checks them
        # no "area", as CrowdPose's own files: its evaluation takes the box's
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [50.0, 50.0, 100.0, 100.0],
                            "iscrowd": 0, "num_keypoints": 14, "keypoints": kps.ravel().tolist()})  # fmt: skip
    path = tmp_path / "crowdpose_test.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person", "keypoints": NAMES}]}))  # fmt: skip
    return str(path), keypoints


def _expected():
    """Exact poses on the easy and medium images (score 0.9, 0.8), a pose 50 px off on the hard
    one (score 0.7): recall reaches 2/3 at precision 1, so AP = 67 of COCO's 101 recall points
    (0, 0.01 ... 0.66); the per-image-class APs are 100, 100, 0."""
    return {"AP": 100 * 67 / 101, "AP50": 100 * 67 / 101, "AR": 100 * 2 / 3, "AP(E)": 100.0, "AP(M)": 100.0,
            "AP(H)": 0.0}  # fmt: skip


def _results(keypoints):
    results = []
    for i, (kps, score) in enumerate(zip(keypoints, (0.9, 0.8, 0.7))):
        pred = kps.copy()
        if i == 2:
            pred[:, 0] += 50
        results.append({"image_id": i + 1, "category_id": 1, "keypoints": pred.ravel().tolist(), "score": score})
    return results


def test_crowdpose_metrics_by_hand(crowdpose_file):
    path, keypoints = crowdpose_file
    metrics = crowdpose_metrics(path, _results(keypoints), SIGMAS)
    for name, value in _expected().items():
        assert metrics[name] == pytest.approx(value, abs=1e-2), name


def test_images_without_crowd_index_are_an_error(tmp_path, crowdpose_file):
    path, keypoints = crowdpose_file
    data = json.loads(open(path).read())
    del data["images"][1]["crowdIndex"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="1 images have no 'crowdIndex'"):
        crowdpose_metrics(str(bad), _results(keypoints), SIGMAS)


def test_registered_dataset_evaluates_through_the_trainer(tmp_path, crowdpose_file):
    from detectron2.config import get_cfg

    from depotr.config import add_depotr_config
    from depotr.data import fill_keypoint_config
    from depotr.engine.trainer import Trainer

    path, keypoints = crowdpose_file
    register_keypoint_dataset("test_crowdpose", path, str(tmp_path), NAMES, flip_pairs(CROWDPOSE_KEYPOINT_TABLE),
                              skeleton=CROWDPOSE_SKELETON, oks_sigmas=SIGMAS, evaluator_type="crowdpose")  # fmt: skip
    try:
        dicts = DatasetCatalog.get("test_crowdpose")
        cfg = get_cfg()
        add_depotr_config(cfg)
        cfg.DATASETS.TEST = ("test_crowdpose",)
        fill_keypoint_config(cfg)  # the dataset's 14 keypoints and sigmas, as train_net's setup does
        cfg.OUTPUT_DIR = str(tmp_path / "out")
        evaluator = Trainer.build_evaluator(cfg, "test_crowdpose")
        assert isinstance(evaluator, CrowdPoseEvaluator)
        evaluator.reset()
        for d, result in zip(dicts, _results(keypoints)):
            instances = Instances((200, 200))
            instances.pred_boxes = Boxes(torch.tensor([[50.0, 50.0, 150.0, 150.0]]))
            instances.scores = torch.tensor([result["score"]])
            instances.pred_classes = torch.zeros(1, dtype=torch.int64)
            kps = torch.tensor(result["keypoints"], dtype=torch.float32).view(1, 14, 3)
            kps[..., :2] += 0.5  # Detectron2's pixel-centre convention: its COCO results subtract 0.5
            instances.pred_keypoints = kps
            evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
        metrics = evaluator.evaluate()["keypoints"]
        for name, value in _expected().items():
            assert metrics[name] == pytest.approx(value, abs=1e-2), name
        written = json.loads((tmp_path / "out" / "inference" / "test_crowdpose" / "keypoint_results.json").read_text())
        assert len(written) == 3 and {r["category_id"] for r in written} == {1}
    finally:
        unregister_dataset("test_crowdpose")
