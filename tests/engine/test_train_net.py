"""train_net.py end to end: a 30-iteration training run with evaluation, as a user runs it; its
log."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest

from detectron2.data import DatasetCatalog

import train_net
from depotr.data import filter_person_annotations

from .conftest import INSTANT_CONFIG, REPO, instant_args


def test_depotr_records_reach_log_txt_and_the_console(tmp_path, capsys):
    output_dir = tmp_path / "run"
    args = instant_args(
        str(output_dir),
        str(tmp_path / "synthetic"),
        "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES",
        "3",
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES",
        "2",
    )
    train_net.setup(args)  # generates the tiny dataset
    filter_person_annotations(DatasetCatalog.get("synthetic_persons_train"))
    logging.getLogger("depotr.engine.trainer").debug("a debug record")
    log = (output_dir / "log.txt").read_text()
    console = capsys.readouterr().out
    for text in (
        "Generated 3 synthetic train images",
        "Generated 2 synthetic val images",
        "Person filter: kept 3 images",
        "a debug record",
    ):
        assert text in log, text
        assert text in console, text
    assert "depotr.data.synthetic_cache" in log and "Rank of current process" in log  # and Detectron2's own


@pytest.mark.slow
def test_train_and_evaluate_through_train_net(tmp_path, synthetic_root):
    output_dir = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        INSTANT_CONFIG,
        "OUTPUT_DIR",
        str(output_dir),
        "DATASETS.SYNTHETIC.ROOT",
        synthetic_root,
    ]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    assert (output_dir / "model_final.pth").is_file()
    assert (output_dir / "last_checkpoint").read_text().strip() == "model_final.pth"
    metrics = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(v) for v in losses)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 29
    evaluation = [m for m in metrics if "keypoints/AP" in m]
    assert evaluation, "no evaluation result in metrics.json"
    assert 0.0 <= evaluation[-1]["keypoints/AP"] <= 100.0
    results = json.loads(
        (output_dir / "inference" / "synthetic_persons_val" / "coco_instances_results.json").read_text()
    )
    assert results and all(len(r["keypoints"]) == 51 for r in results)
    assert "Evaluation results for keypoints" in completed.stdout + completed.stderr


def test_cli_loads_the_config_once(tmp_path, monkeypatch):
    """The config cli() loaded and checked is the one setup() builds on: not loaded a second time."""
    import depotr.config
    import depotr.engine

    loads, launched = [], []
    load = depotr.config.load_depotr_config
    monkeypatch.setattr(depotr.config, "load_depotr_config", lambda *a: loads.append(a) or load(*a))
    monkeypatch.setattr(depotr.engine, "launch", lambda main, *a, args, **k: launched.append(args))
    argv = ["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", str(tmp_path / "run")]
    argv += ["DATASETS.SYNTHETIC.ROOT", str(tmp_path / "synthetic"), "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES", "2"]
    assert train_net.cli(argv + ["DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1"]) == 0
    cfg = train_net.setup(*launched[0])
    assert len(loads) == 1 and cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES == 2 and cfg.is_frozen()
