"""benchmarks/bench_train_step.py runs a config's real training steps and reports per-crop FLOPs."""

import os

from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")


def test_reports_crops_flops_and_the_matmul_share(tmp_path, capsys):
    bench = load_script("benchmarks/bench_train_step.py")
    assert (
        bench.main(
            [
                "--config-file",
                INSTANT_CONFIG,
                "--iters",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--opts",
                "DATASETS.SYNTHETIC.ROOT",
                str(tmp_path / "data"),
                "OUTPUT_DIR",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")[1:-1]
    crops_per_it, seconds, crops_per_s, _, gflop_per_crop, gflops, matmul, share = (c.strip() for c in row[1:])
    assert float(crops_per_it) > 0 and float(seconds) > 0
    assert abs(float(crops_per_s) - float(crops_per_it) / float(seconds)) / float(crops_per_s) < 0.5
    # A 64x48 crop through ResNet-18 (forward + backward) alone is ~0.5 GFLOP.
    assert 0.3 < float(gflop_per_crop) < 5.0
    assert float(matmul) > 0 and share.endswith("%")
