"""The Trainer's training data."""

import pytest

from detectron2.data import DatasetCatalog

from depotr.config import load_depotr_config
from depotr.engine.trainer import load_training_dicts

from .conftest import INSTANT_CONFIG

K = 17


@pytest.fixture
def unlabelled_dataset():
    """A registered dataset of 3 images whose persons have no labelled keypoint (one is a crowd)."""
    name = "depotr_test_unlabelled_persons"

    def dicts():
        person = {"bbox": [10, 10, 40, 80], "bbox_mode": 1, "category_id": 0, "keypoints": [0.0] * (3 * K)}
        return [
            {
                "file_name": f"{i}.jpg",
                "image_id": i,
                "height": 100,
                "width": 100,
                "annotations": [person, {**person, "iscrowd": 1}] if i == 0 else [person],
            }
            for i in range(3)
        ]

    DatasetCatalog.register(name, dicts)
    yield name
    DatasetCatalog.remove(name)


def test_no_usable_person_is_an_error_naming_the_dataset_and_the_filter(unlabelled_dataset):
    cfg = load_depotr_config(INSTANT_CONFIG, ["DATASETS.TRAIN", (unlabelled_dataset,)])
    with pytest.raises(
        ValueError,
        match=rf"DATASETS.TRAIN \('{unlabelled_dataset}',\) has no person to train on: "
        r"the training filter .* dropped every person of its 3 images \(1 crowd, "
        r"3 without labelled keypoints\)",
    ):
        load_training_dicts(cfg)
