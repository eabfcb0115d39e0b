"""Shared helpers for the training tests: the instant config on a tiny synthetic set."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """One tiny synthetic dataset for all training tests (generated on first use)."""
    return str(tmp_path_factory.mktemp("synthetic_persons"))


def instant_args(output_dir: str, synthetic_root: str, *opts: str, extra=()):
    """Parsed ``train_net.py`` arguments for the instant config."""
    from depotr.cli import training_argument_parser

    return training_argument_parser("train_net.py").parse_args(
        [
            "--config-file",
            INSTANT_CONFIG,
            *extra,
            "OUTPUT_DIR",
            output_dir,
            "DATASETS.SYNTHETIC.ROOT",
            synthetic_root,
            *opts,
        ]
    )
