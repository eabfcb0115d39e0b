"""train_net.py --eval-only with MODEL.DEPOTR.TEST_BOX_SOURCE "detector": the person detector
runs beside the pose model (PoseWithDetector), inside Detectron2's inference_on_dataset and
COCOEvaluator, and the evaluated persons are the detector's boxes under the one box policy."""

import json
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

import train_net
from depotr.cli import run_main
from depotr.engine import Trainer
from depotr.engine.detector import build_person_detector
from depotr.modeling.person_detector import PoseWithDetector
from tests.modeling.test_person_detector import _detector_cfg, fix_person_scores

from .conftest import INSTANT_CONFIG, REPO, instant_args


def test_eval_only_with_a_detector_box_source(tmp_path, synthetic_root):
    torch.manual_seed(0)
    det = _detector_cfg(tmp_path, weights="")
    detector = build_person_detector(det, random_weights=True)
    fix_person_scores(detector)  # every box scores sigmoid(1)
    DetectionCheckpointer(detector.detector, save_dir=str(tmp_path)).save("detector")
    output_dir = tmp_path / "eval"
    opts = [
        "MODEL.WEIGHTS", "",  # random pose model: this checks the plumbing, not the AP
        "MODEL.DEPOTR.TEST_BOX_SOURCE", "detector",
        "MODEL.DEPOTR.DETECTOR.CONFIG_FILE", det.MODEL.DEPOTR.DETECTOR.CONFIG_FILE,
        "MODEL.DEPOTR.DETECTOR.WEIGHTS", str(tmp_path / "detector.pth"),
        "MODEL.DEPOTR.DETECTOR.SCORE_THRESH", "0.0",
        "MODEL.DEPOTR.BOX_TOPK", "3",
        "TEST.OKS_NMS_THRESH", "1.0",
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "2",
    ]  # fmt: skip
    args = instant_args(str(output_dir), synthetic_root, *opts, extra=["--eval-only", "--random-weights"])
    results = train_net.main(args)
    assert 0.0 <= results["keypoints"]["AP"] <= 100.0

    # The evaluated persons are the detector's top 3 boxes of each image (clipped; XYWH in the json).
    cfg = train_net.setup(args)
    expected = {}
    for batch in Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0]):
        for x, proposals in zip(batch, detector(batch, cfg.INPUT.FORMAT)):
            boxes = proposals.proposal_boxes.tensor[proposals.scores.argsort(descending=True, stable=True)[:3]]
            assert len(boxes), "the fixed detector finds persons in every image"
            boxes[:, 2:] -= boxes[:, :2]
            expected[x["image_id"]] = boxes
    predictions = json.loads(
        (output_dir / "inference" / cfg.DATASETS.TEST[0] / "coco_instances_results.json").read_text()
    )
    assert {p["image_id"] for p in predictions} == set(expected)
    for image_id, boxes in expected.items():
        found = torch.tensor([p["bbox"] for p in predictions if p["image_id"] == image_id])
        assert all(len(p["keypoints"]) == 51 for p in predictions)
        torch.testing.assert_close(found, boxes, atol=1e-3, rtol=0)


def test_a_trainer_builds_its_person_detector_once(tmp_path, synthetic_root, monkeypatch):
    """Two evaluations of one training run (EvalHook every iteration, then the final one) run the
    detector of MODEL.DEPOTR.DETECTOR built, with its weights loaded, at the first of them."""
    import depotr.engine.trainer as trainer_module

    builds = []
    monkeypatch.setattr(  # a random detector (DETECTOR.WEIGHTS empty), asked for
        trainer_module,
        "build_person_detector",
        lambda cfg: builds.append(cfg) or build_person_detector(cfg, random_weights=True),
    )
    det = _detector_cfg(tmp_path, weights="")
    opts = [
        "SOLVER.MAX_ITER", "2",
        "TEST.EVAL_PERIOD", "1",
        "MODEL.DEPOTR.TEST_BOX_SOURCE", "detector",
        "MODEL.DEPOTR.DETECTOR.CONFIG_FILE", det.MODEL.DEPOTR.DETECTOR.CONFIG_FILE,
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "1",
    ]  # fmt: skip
    trainer = Trainer(train_net.setup(instant_args(str(tmp_path / "train"), synthetic_root, *opts)))
    trainer.resume_or_load(resume=False)
    evaluations = []
    monkeypatch.setattr(
        trainer_module.CompatDefaultTrainer, "test", classmethod(lambda c, cfg, model, e: evaluations.append(model))
    )
    trainer.train()
    assert len(evaluations) == 2 and all(isinstance(m, PoseWithDetector) for m in evaluations)
    assert len(builds) == 1 and evaluations[0].detector is evaluations[1].detector


def test_empty_detector_weights_need_random_weights_before_any_work(tmp_path, monkeypatch, capsys):
    """The friction: an empty DETECTOR.WEIGHTS evaluated with a random detector, a warning only."""
    import depotr.engine

    monkeypatch.setattr(depotr.engine, "launch", lambda *a, **k: None)
    det = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    detector = ["MODEL.DEPOTR.TEST_BOX_SOURCE", "detector", "MODEL.DEPOTR.DETECTOR.CONFIG_FILE", det.CONFIG_FILE]
    argv = ["--config-file", INSTANT_CONFIG, "--eval-only", "OUTPUT_DIR", str(tmp_path / "eval"), *detector]
    pose_weights = ["MODEL.WEIGHTS", os.path.join(REPO, "README.md")]  # only checked to exist before the launch
    assert run_main(train_net.cli, argv + pose_weights) == 2
    (last_line,) = capsys.readouterr().err.splitlines()[-1:]
    assert last_line.startswith("error: MODEL.DEPOTR.DETECTOR.WEIGHTS is empty: set it to the person detector's")
    assert run_main(train_net.cli, ["--random-weights", *argv]) == 0


def test_random_weights_reach_the_person_detector_of_train_net(tmp_path, synthetic_root, monkeypatch):
    """--random-weights is passed on to the detector of --eval-only and of a training run's
    evaluations (built before either starts)."""
    import depotr.engine.detector as person_detector

    built, tested = [], []
    monkeypatch.setattr(
        person_detector, "build_person_detector", lambda cfg, random_weights=False: built.append(random_weights) or "D"
    )
    monkeypatch.setattr(
        Trainer,
        "test",
        classmethod(lambda c, cfg, m, e=None, person_detector=None: tested.append(person_detector) or {}),
    )
    monkeypatch.setattr(Trainer, "train", lambda self: self._person_detector)
    det = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    opts = [
        "MODEL.DEPOTR.TEST_BOX_SOURCE", "detector",
        "MODEL.DEPOTR.DETECTOR.CONFIG_FILE", det.CONFIG_FILE,
        "DATASETS.SYNTHETIC.NUM_VAL_IMAGES", "2",
    ]  # fmt: skip
    train_net.main(
        instant_args(str(tmp_path / "eval"), synthetic_root, *opts, extra=["--eval-only", "--random-weights"])
    )
    assert built == [True] and tested == ["D"]
    trained = train_net.main(instant_args(str(tmp_path / "train"), synthetic_root, *opts, extra=["--random-weights"]))
    assert trained == "D" and built == [True, True]  # Trainer.train stands in: the trainer's detector
