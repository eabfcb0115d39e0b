"""demo/demo.py end to end on images the test writes (one of them unreadable)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")


@pytest.mark.slow
def test_demo_draws_good_images_and_reports_unreadable_ones(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)
    cv2.imwrite(str(inputs / "person.jpg"), image)
    (inputs / "broken.jpg").write_bytes(b"not a jpeg")
    completed = subprocess.run(
        [sys.executable, os.path.join(REPO, "demo", "demo.py"), "--config-file", INSTANT_CONFIG,
         "--input", str(inputs), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "skipping" in completed.stderr and "broken.jpg" in completed.stderr
    assert "1 image(s) could not be read" in completed.stderr
    drawn = cv2.imread(str(tmp_path / "out" / "person.png"))
    assert drawn is not None and drawn.shape == image.shape  # Visualizer draws at the input size
    assert not np.array_equal(drawn, image)  # a skeleton was drawn
    assert "person.jpg -> " in completed.stdout and ": 1 persons" in completed.stdout
