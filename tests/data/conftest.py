"""Shared fixtures for the data tests: a small synthetic dataset rendered once per session."""

import json

import pytest

from depotr.data.synthetic_cache import ensure_synthetic_split, synthetic_split_paths

SMALL_SEED = 7
SMALL_NUM_IMAGES = 12


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    """(root, paths, coco dict) of a 12-image synthetic train split."""
    root = str(tmp_path_factory.mktemp("synthetic"))
    json_file = ensure_synthetic_split(root, "train", SMALL_NUM_IMAGES, SMALL_SEED)
    with open(json_file) as f:
        coco = json.load(f)
    return root, synthetic_split_paths(root, "train", SMALL_NUM_IMAGES, SMALL_SEED), coco


@pytest.fixture(scope="session")
def small_synthetic_v4(tmp_path_factory):
    """(root, paths, coco dict) of a 12-image synthetic train split of generator version 4."""
    root = str(tmp_path_factory.mktemp("synthetic_v4"))
    json_file = ensure_synthetic_split(root, "train", SMALL_NUM_IMAGES, SMALL_SEED, version=4)
    with open(json_file) as f:
        coco = json.load(f)
    return root, synthetic_split_paths(root, "train", SMALL_NUM_IMAGES, SMALL_SEED, version=4), coco


@pytest.fixture
def restore_synthetic_registration():
    """Re-registers the synthetic datasets with the defaults after a test changed them."""
    yield
    from depotr.data.datasets import register_default_synthetic_datasets

    register_default_synthetic_datasets()
