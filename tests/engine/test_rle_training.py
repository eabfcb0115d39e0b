"""The RLE synthetic config trains end to end: 2 iterations (deep supervision and half-body
boxes on too), then evaluation with the flip test, through the Trainer as train_net.py runs it."""

import json
import math
import os

import pytest

from detectron2.engine import default_argument_parser

import train_net
from depotr.engine import Trainer

from .conftest import REPO

RLE_CONFIG = os.path.join(REPO, "configs", "depotr_rle_r18_synthetic.yaml")


@pytest.mark.slow
def test_rle_config_trains_and_evaluates(tmp_path, synthetic_root):
    output_dir = tmp_path / "rle"
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            RLE_CONFIG,
            "OUTPUT_DIR",
            str(output_dir),
            "DATASETS.SYNTHETIC.ROOT",
            synthetic_root,
            # The instant config's tiny synthetic set (shared with the other training tests).
            "DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES",
            "16",
            "DATASETS.SYNTHETIC.NUM_VAL_IMAGES",
            "6",
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.WARMUP_ITERS",
            "1",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
            "MODEL.DEPOTR.AUX_LOSS",
            "True",
            "INPUT.CROP_AUG.HALF_BODY_PROB",
            "1.0",
            "TEST.FLIP",
            "True",
        ]
    )
    cfg = train_net.setup(args)
    assert (cfg.MODEL.DEPOTR.HEAD, cfg.MODEL.DEPOTR.REGRESSION.LOSS) == ("regression", "rle")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    metrics = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    losses = [m for m in metrics if "total_loss" in m]
    assert max(m["iteration"] for m in losses) == 1
    # The last decoder layer and the auxiliary layer 0, nothing else.
    terms = {k for k in losses[-1] if k.startswith("loss_")}
    assert terms == {"loss_keypoint_rle", "loss_keypoint_rle_0"}
    assert all(math.isfinite(m[k]) for m in losses for k in terms)
    assert any("keypoints/AP" in m for m in metrics)
    results = json.loads(
        (output_dir / "inference" / "synthetic_persons_val" / "coco_instances_results.json").read_text()
    )
    scores = [s for r in results for s in r["keypoints"][2::3]]
    assert scores and all(0.0 < s < 1.0 for s in scores)  # 1 - mean sigma
