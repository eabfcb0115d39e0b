"""train_net.py end to end: a 30-iteration training run with evaluation, as a user runs it."""
import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import INSTANT_CONFIG, REPO


@pytest.mark.slow
def test_train_and_evaluate_through_train_net(tmp_path, synthetic_root):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", INSTANT_CONFIG,
        "OUTPUT_DIR", str(output_dir), "DATASETS.SYNTHETIC.ROOT", synthetic_root,
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
    results = json.loads((output_dir / "inference" / "synthetic_persons_val" / "coco_instances_results.json").read_text())
    assert results and all(len(r["keypoints"]) == 51 for r in results)
    assert "Evaluation results for keypoints" in completed.stdout + completed.stderr
