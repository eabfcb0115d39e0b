"""The person detector outside the pose model (depotr.modeling.person_detector; built with its
weights by depotr.engine.detector): a frozen Detectron2 detector giving person proposals, and
PoseWithDetector, detector then pose model."""

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

from depotr.cli import ConfigError
from depotr.config import add_depotr_config
from depotr.engine.detector import build_person_detector, detector_weights_to_load
from depotr.modeling.box_sources import PrecomputedBoxes
from depotr.modeling.person_detector import PoseWithDetector, resolve_model_zoo_path

from .test_meta_arch import K, make_input, make_model

DETECTOR_ZOO_CONFIG = "model_zoo:COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _detector_cfg(tmp_path, weights: str):
    """A DePOTR config whose MODEL.DEPOTR.DETECTOR is a model-zoo Faster R-CNN with one class
    (person) at 96-128 px, ``weights`` ("" = random init)."""
    det_yaml = tmp_path / "detector.yaml"
    det_yaml.write_text(
        f'_BASE_: "{resolve_model_zoo_path(DETECTOR_ZOO_CONFIG)}"\n'
        "MODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 1\n"  # only "person": random init still finds persons
        "INPUT:\n  MIN_SIZE_TEST: 96\n  MAX_SIZE_TEST: 128\n"
    )
    cfg = get_cfg()
    add_depotr_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = str(det_yaml)
    cfg.MODEL.DEPOTR.DETECTOR.WEIGHTS = weights
    cfg.MODEL.DEPOTR.DETECTOR.SCORE_THRESH = 0.0
    return cfg


def fix_person_scores(detector) -> None:
    """Known classifier of a random detector: person logit 1, background 0, so every box scores
    sigmoid(1) = 0.731 and the boxes are the proposals."""
    box_predictor = detector.detector.roi_heads.box_predictor
    with torch.no_grad():
        for p in box_predictor.parameters():
            p.zero_()
        box_predictor.cls_score.bias[0] = 1.0


def test_model_zoo_paths_resolve():
    assert Path(resolve_model_zoo_path(DETECTOR_ZOO_CONFIG)).is_file()
    assert resolve_model_zoo_path(DETECTOR_ZOO_CONFIG, checkpoint=True).startswith("https://")
    assert resolve_model_zoo_path("some/file.yaml") == "some/file.yaml"


def test_build_person_detector_needs_a_config():
    cfg = get_cfg()
    add_depotr_config(cfg)
    with pytest.raises(ValueError, match="needs MODEL.DEPOTR.DETECTOR.CONFIG_FILE"):
        build_person_detector(cfg)


def test_detector_weights_follow_the_rule_of_the_pose_weights(tmp_path, caplog):
    """The friction: an empty DETECTOR.WEIGHTS ran a random detector with a warning only; a
    missing file or config was a raw AssertionError, a DePOTR config a KeyError."""
    with pytest.raises(ConfigError, match=r"DETECTOR.WEIGHTS is empty: .*--random-weights"):
        build_person_detector(_detector_cfg(tmp_path, weights=""))
    with caplog.at_level("WARNING", logger="depotr.modeling.person_detector"):
        assert detector_weights_to_load(_detector_cfg(tmp_path, weights=""), random_weights=True) is False
    assert "runs with random weights (asked for)" in caplog.text
    missing = str(tmp_path / "missing.pth")
    for random_weights in (False, True):  # weights that are set are loaded, or their absence an error
        with pytest.raises(ConfigError, match=f"DETECTOR.WEIGHTS {missing}: no such checkpoint file"):
            build_person_detector(_detector_cfg(tmp_path, weights=missing), random_weights)
    cfg = _detector_cfg(tmp_path, weights="")
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"DETECTOR.CONFIG_FILE .*missing.yaml: no such config file"):
        build_person_detector(cfg, random_weights=True)
    cfg.MODEL.DEPOTR.DETECTOR.CONFIG_FILE = os.path.join(REPO, "configs", "depotr_hm_r18_synthetic.yaml")
    with pytest.raises(
        ConfigError, match=r"depotr_hm_r18_synthetic.yaml is not a Detectron2 detector config: .*DEPOTR"
    ):
        build_person_detector(cfg, random_weights=True)


def test_detector_weights_must_hold_the_whole_detector(tmp_path):
    """The friction: a file that is not a detector checkpoint, or part of one, loaded what it
    could with fvcore's warnings and ran the rest random."""
    from detectron2.checkpoint import DetectionCheckpointer

    detector = build_person_detector(_detector_cfg(tmp_path, weights=""), random_weights=True)
    DetectionCheckpointer(detector.detector, save_dir=str(tmp_path)).save("detector")
    whole = torch.load(tmp_path / "detector.pth")["model"]
    partial = {k: v for k, v in whole.items() if not k.startswith("roi_heads.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    torch.save({"model": {"keypoint_branch.head.bias": torch.zeros(17)}}, tmp_path / "pose.pth")
    for name, problem in (
        ("partial.pth", r"does not fit the model .* are not in it: roi_heads\."),
        ("pose.pth", r"holds none of the model's \d+ parameters and buffers \(not in it: backbone\."),
    ):
        with pytest.raises(
            ConfigError,
            match=r"DETECTOR.WEIGHTS is not a checkpoint of .*detector.yaml: checkpoint .*"
            + re.escape(name)
            + " "
            + problem,
        ):
            build_person_detector(_detector_cfg(tmp_path, weights=str(tmp_path / name)))


def test_person_detector_gives_person_proposals(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    torch.manual_seed(0)
    reference = build_person_detector(_detector_cfg(tmp_path, weights=""), random_weights=True)  # random init
    fix_person_scores(reference)
    DetectionCheckpointer(reference.detector, save_dir=str(tmp_path)).save("detector")
    torch.manual_seed(1)
    detector = build_person_detector(_detector_cfg(tmp_path, weights=str(tmp_path / "detector.pth")))
    for (name, a), b in zip(reference.detector.state_dict().items(), detector.detector.state_dict().values()):
        assert torch.equal(a, b), f"checkpoint not loaded: {name}"
    assert not any(p.requires_grad for p in detector.parameters())
    detector.train()
    assert not detector.training and not detector.detector.training

    g = torch.Generator().manual_seed(0)
    inputs = [make_input("a", 1, g, size=(72, 96)), make_input("b", 1, g, size=(96, 64))]
    results = detector(inputs, "RGB")
    raw = detector.detector([detector._detector_input(x, "RGB") for x in inputs])
    assert all(len(p) for p in results)
    for x, proposals, out in zip(inputs, results, raw):
        assert proposals.image_size == tuple(x["image"].shape[-2:])
        boxes, scores = proposals.proposal_boxes.tensor, proposals.scores
        inst = out["instances"]
        persons = inst[inst.pred_classes == 0]
        assert len(boxes) == len(persons) and scores.shape == (len(boxes),)
        torch.testing.assert_close(boxes, persons.pred_boxes.tensor)
        torch.testing.assert_close(scores, torch.full_like(scores, torch.sigmoid(torch.tensor(1.0)).item()))
        assert bool((boxes[:, 2] <= x["image"].shape[2]).all() and (boxes[:, 3] <= x["image"].shape[1]).all())

    detector.score_thresh = 0.75  # above sigmoid(1): nothing is kept
    assert all(len(p) == 0 for p in detector(inputs, "RGB"))
    assert detector([], "RGB") == []


class StandInDetector(nn.Module):
    """Stands in for a PersonDetector: fixed proposals (boxes, scores) per image id."""

    def __init__(self, found):
        super().__init__()
        self.found = found
        self.calls = []

    def forward(self, batched_inputs, input_format):
        self.calls.append(([x["image_id"] for x in batched_inputs], input_format))
        results = []
        for x in batched_inputs:
            proposals = Instances(tuple(x["image"].shape[-2:]))
            boxes, scores = self.found[x["image_id"]]
            proposals.proposal_boxes, proposals.scores = Boxes(torch.tensor(boxes)), torch.tensor(scores)
            results.append(proposals)
        return results


def test_pose_with_detector_applies_the_box_policy_to_the_detections():
    boxes = [[2.0, 2.0, 20.0, 40.0], [30.0, 4.0, 50.0, 44.0], [10.0, 5.0, 30.0, 45.0], [40.0, 2.0, 60.0, 30.0]]
    scores = [0.4, 0.9, 0.6, 0.7]  # threshold 0.5 drops box 0; top 2 of the rest: 1 (0.9), 3 (0.7)
    detector = StandInDetector({"a": (boxes, scores)})
    pose_model = make_model(box_source=PrecomputedBoxes(score_thresh=0.5, topk=2))
    model = PoseWithDetector(detector, pose_model, "BGR").eval()
    g = torch.Generator().manual_seed(0)
    x = make_input("a", 0, g)
    del x["instances"], x["proposals"]
    with torch.no_grad():
        (out,) = model([x])
    inst = out["instances"]
    assert detector.calls == [(["a"], "BGR")]
    assert inst.box_index.tolist() == [1, 3]
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([boxes[1], boxes[3]]))
    assert inst.pred_keypoints.shape == (2, K, 3)
    assert "proposals" not in x  # the caller's dict is not changed
    # The pose model alone gets no proposals: the "precomputed" source says what to do.
    with pytest.raises(KeyError, match="PoseWithDetector"):
        pose_model([x])
    with pytest.raises(RuntimeError, match="inference only"):
        model.train()([x])
