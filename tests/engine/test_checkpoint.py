"""Checkpoints are written whole or not at all, and load only into the model they fit."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer, detection_checkpoint
from detectron2.modeling import Backbone, build_model

from depotr import Predictor
from depotr.cli import ConfigError
from depotr.config import load_depotr_config
from depotr.engine import DePOTRCheckpointer
from depotr.engine.checkpoint import check_checkpoint_fits, weights_to_load

from .conftest import INSTANT_CONFIG, REPO


def test_save_writes_checkpoint_and_tag(tmp_path):
    model = nn.Linear(3, 2)
    checkpointer = DePOTRCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    data = torch.load(tmp_path / "model_0000009.pth")
    torch.testing.assert_close(data["model"]["weight"], model.weight)
    assert data["iteration"] == 9
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = DePOTRCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dying_save)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]  # no temp file left


# ---------------------------------------------------------------------------------------------
# Loading: the weights must fit the model


def _instant_model(*opts):
    torch.manual_seed(len(opts))
    return build_model(load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", *opts]))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpoint_of_the_same_config_loads_every_weight(tmp_path):
    trained = _instant_model()
    DePOTRCheckpointer(trained, str(tmp_path)).save("model_final")
    model = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")  # another random initialisation, same shapes
    DePOTRCheckpointer(model).load(str(tmp_path / "model_final.pth"))
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_checkpoint_that_names_the_heatmap_body_backbone_loads_every_weight(tmp_path):
    """Heatmap-branch checkpoints of version 1 (before the body was named "body") still load."""
    trained = _instant_model()
    state = trained.state_dict()
    old = type(state)((k.replace("keypoint_branch.body.", "keypoint_branch.backbone.", 1), v) for k, v in state.items())
    old._metadata = {name: dict(meta) for name, meta in state._metadata.items()}
    old._metadata["keypoint_branch"]["version"] = 1
    assert any(k.startswith("keypoint_branch.backbone.") for k in old)
    torch.save({"model": old}, tmp_path / "model_final.pth")
    model = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")
    DePOTRCheckpointer(model).load(str(tmp_path / "model_final.pth"))
    for name, value in state.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_pose_checkpoint_with_a_detector_configured_holds_the_pose_model_only(tmp_path):
    """The detector runs beside the pose model (depotr.modeling.person_detector): a checkpoint of
    a config with a detector holds exactly the weights of the same config without one."""
    from tests.modeling.test_person_detector import _detector_cfg

    det = _detector_cfg(tmp_path, weights="").MODEL.DEPOTR.DETECTOR
    detector_opts = ("MODEL.DEPOTR.TEST_BOX_SOURCE", "detector", "MODEL.DEPOTR.DETECTOR.CONFIG_FILE", det.CONFIG_FILE)
    DePOTRCheckpointer(_instant_model(*detector_opts), str(tmp_path)).save("model_final")
    cfg = load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", *detector_opts])
    predictor = Predictor(cfg, random_weights=True)
    assert predictor.detector is not None
    DePOTRCheckpointer(predictor.model, str(tmp_path)).save("predictor")
    pose_only = set(_instant_model().state_dict())
    for name in ("model_final", "predictor"):
        saved = torch.load(tmp_path / f"{name}.pth")["model"]
        assert set(saved) == pose_only, name
        assert not [k for k in saved if "detector" in k]


def test_old_checkpoint_with_detector_weights_loads_and_drops_them(tmp_path, caplog):
    """Checkpoints from when the detector was the model's box source held its weights under
    ``box_source.``: they load, those keys dropped and counted."""
    trained = _instant_model()
    state = dict(trained.state_dict())
    state["box_source.detector.detector.backbone.bottom_up.stem.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    state["box_source.detector.detector.roi_heads.box_predictor.cls_score.bias"] = torch.zeros(2)
    state["box_source.fallback.detector.detector.proposal_generator.rpn_head.conv.bias"] = torch.zeros(256)
    torch.save({"model": state}, tmp_path / "old.pth")
    model = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")
    with caplog.at_level("INFO", logger="depotr.engine.checkpoint"):
        DePOTRCheckpointer(model).load(str(tmp_path / "old.pth"))
    for name, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert "dropped 3 person-detector weights (box_source.*)" in caplog.text


@pytest.mark.parametrize(
    "other, named",
    [
        (("MODEL.DEPOTR.HIDDEN_DIM", "32"), r"have another shape: .*\(32,\) in the checkpoint, \(64,\) in the model"),
        (
            ("MODEL.DEPOTR.HEAD", "simple_baseline", "MODEL.DEPOTR.AUX_LOSS", "False", "INPUT.CROP_SIZE", "(64, 64)"),
            r"holds none of the model's \d+ parameters and buffers",
        ),
        (("MODEL.DEPOTR.HEATMAP.MLP_LAYERS", "1"), r"are not in it: keypoint_branch\.head\."),
    ],
    ids=["other-width", "other-head", "other-mlp-depth"],
)
def test_checkpoint_of_another_config_is_an_error_naming_the_parameters(tmp_path, other, named):
    DePOTRCheckpointer(_instant_model(*other), str(tmp_path)).save("model_0000009")
    path = str(tmp_path / "model_0000009.pth")
    for load in (
        lambda: DePOTRCheckpointer(_instant_model()).load(path),  # --eval-only, tools
        lambda: Predictor(load_depotr_config(INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path])),
        lambda: DePOTRCheckpointer(_instant_model(), str(tmp_path), allow_backbone_only=True).resume_or_load(
            "", resume=True
        ),  # --resume: last_checkpoint names the file
        lambda: DePOTRCheckpointer(_instant_model(), allow_backbone_only=True).resume_or_load(path, resume=False),
    ):
        with pytest.raises(ConfigError, match=named) as error:  # one line "error: ..." from the commands
            load()
        assert path in str(error.value)


# Detectron2 main reads a URL query off the path it loads (urllib's parse_qs); v0.6 takes it for
# part of the file name.
_READS_URL_QUERY = hasattr(detection_checkpoint, "parse_qs")
_NAME_MATCHING = "?matching_heuristics=True"


def _keypoint_branch_file(path):
    """The instant model, and its weights saved as its keypoint branch's own state_dict (names
    without "keypoint_branch."): they fit the model under Detectron2's name matching only."""
    source = _instant_model()
    torch.save({"model": source.keypoint_branch.state_dict()}, path)
    return source


def _fit_check(tmp_path, weights):
    """train_net.py's check of the checkpoint an --eval-only run loads."""
    cfg = load_depotr_config(
        INSTANT_CONFIG, ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.WEIGHTS", weights]
    )
    check_checkpoint_fits(cfg, resume=False, eval_only=True)


@pytest.mark.skipif(not _READS_URL_QUERY, reason="Detectron2 v0.6 reads no URL query (see the next test)")
def test_matching_heuristics_query_applies_to_the_fit_check_as_to_the_load(tmp_path):
    """Detectron2 main: ``MODEL.WEIGHTS file.pth?matching_heuristics=True`` loads ``file.pth``
    with the weight names matched by suffix. The friction: DePOTR called such a local path "no
    such file", and the fit check (memory-mapped, on the meta device) read the file past
    Detectron2's query, so it refused what the run loads."""
    path = str(tmp_path / "branch.pth")
    source = _keypoint_branch_file(path)
    reference = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")
    DetectionCheckpointer(reference).load(path + _NAME_MATCHING)  # Detectron2's own load
    for name, value in source.state_dict().items():
        assert torch.equal(reference.state_dict()[name], value), name

    assert weights_to_load(path + _NAME_MATCHING)
    model = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")
    DePOTRCheckpointer(model).load(path + _NAME_MATCHING)
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    _fit_check(tmp_path, path + _NAME_MATCHING)
    with pytest.raises(ConfigError, match=r"branch\.pth holds none of the model's \d+ parameters and buffers"):
        _fit_check(tmp_path, path)  # without the query the names do not fit


@pytest.mark.skipif(_READS_URL_QUERY, reason="Detectron2 main reads the query (see the previous test)")
def test_without_url_queries_a_query_is_part_of_the_file_name(tmp_path):
    """Detectron2 v0.6 reads no URL query: fvcore looks for a file named ``file.pth?...`` and
    fails; every DePOTR check says so alike rather than load ``file.pth`` without name matching."""
    path = str(tmp_path / "branch.pth")
    _keypoint_branch_file(path)
    weights = path + _NAME_MATCHING
    with pytest.raises(AssertionError, match="not found"):
        DetectionCheckpointer(_instant_model()).load(weights)  # Detectron2's own load
    for check in (
        lambda: weights_to_load(weights),
        lambda: DePOTRCheckpointer(_instant_model()).load(weights),
        lambda: _fit_check(tmp_path, weights),
    ):
        with pytest.raises(ConfigError, match=r"branch\.pth\?matching_heuristics=True: no such (checkpoint )?file"):
            check()


def _write_backbone_only_pkl(model, path, edit=lambda weights: weights):
    """An ImageNet-style file: the backbone's weights under Detectron2's backbone names, as
    Detectron2's convert-torchvision-to-d2.py writes them, plus a classifier the model lacks;
    ``edit`` changes the weights before they are written."""
    prefix = next(n for n, m in model.named_modules() if isinstance(m, Backbone) and n) + "."
    weights = {k[len(prefix) :]: v.numpy() for k, v in model.state_dict().items() if k.startswith(prefix)}
    weights = edit(weights)
    weights["fc1000.weight"] = np.zeros((1000, 512), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "torchvision", "matching_heuristics": True}, f)
    return prefix


def test_backbone_only_file_initialises_training_with_a_summary(tmp_path, caplog):
    source = _instant_model("MODEL.DEPOTR.DROPOUT", "0.1")
    path = str(tmp_path / "R-18.pkl")
    prefix = _write_backbone_only_pkl(source, path)
    model = _instant_model()
    before = _state(model)
    with caplog.at_level("INFO", logger="depotr.engine.checkpoint"):
        DePOTRCheckpointer(model, str(tmp_path / "run"), allow_backbone_only=True).resume_or_load(path, resume=True)
    for name, value in model.state_dict().items():
        expected = source.state_dict()[name] if name.startswith(prefix) else before[name]
        assert torch.equal(value, expected), name
    assert "holds backbone weights only" in caplog.text and "keep their random initialisation" in caplog.text

    with pytest.raises(ValueError, match=r"holds backbone weights only, which can start a training run but not"):
        DePOTRCheckpointer(_instant_model()).load(path)  # evaluation needs every weight


def test_backbone_only_summary_counts_what_the_file_held(tmp_path, caplog):
    """The friction: converted torchvision ResNet-50 weights (265 tensors) in simple_baseline_r50 were
    logged as "loaded 268 of the model's 285 ...; the other 17": the BatchNorm step counters of the
    head's deconvolutions, not in the file, counted as loaded."""
    opts = ("MODEL.DEPOTR.HEAD", "simple_baseline", "MODEL.DEPOTR.AUX_LOSS", "False", "INPUT.CROP_SIZE", "(64, 64)")
    model = _instant_model(*opts)
    path = str(tmp_path / "R-18.pkl")
    prefix = _write_backbone_only_pkl(model, path)
    keys = list(model.state_dict())
    held = sum(k.startswith(prefix) for k in keys)
    assert any(k.endswith("num_batches_tracked") and not k.startswith(prefix) for k in keys)  # the head's BN
    with caplog.at_level("INFO", logger="depotr.engine.checkpoint"):
        DePOTRCheckpointer(model, str(tmp_path / "run"), allow_backbone_only=True).resume_or_load(path, resume=False)
    assert f"loaded {held} of the model's {len(keys)} parameters and buffers; the other {len(keys) - held} (" in (
        caplog.text
    )


def test_backbone_only_file_must_hold_the_whole_backbone(tmp_path):
    """The friction: converted ResNet-18 weights in a RESNETS.DEPTH 34 config started training
    with 16 backbone tensors at their random initialisation (frozen ones too), an INFO line only;
    ResNet-34 weights in a ResNet-18 config left their extra blocks unused."""
    model = _instant_model()
    shallower, deeper = str(tmp_path / "shallower.pkl"), str(tmp_path / "deeper.pkl")
    _write_backbone_only_pkl(model, shallower, lambda w: {k: v for k, v in w.items() if not k.startswith("res5.1.")})
    _write_backbone_only_pkl(
        model, deeper, lambda w: {**w, **{k.replace("res5.1.", "res5.2."): v for k, v in w.items() if "res5.1." in k}}
    )
    for path, named in (
        (shallower, r"\d+ are not in it: \S*backbone\.res5\.1\."),
        (deeper, r"\d+ backbone weights of it fit none of the model's: res5\.2\."),
    ):
        with pytest.raises(
            ConfigError, match=r"backbone weights only, but not those of .*: of its \d+ .*" + named
        ) as error:
            DePOTRCheckpointer(_instant_model(), allow_backbone_only=True).resume_or_load(path, resume=False)
        assert path in str(error.value)


def test_missing_checkpoint_files_are_errors_naming_them(tmp_path):
    """The friction: fvcore's AssertionError "Checkpoint ... not found!", with a traceback, for a
    missing file and for a last_checkpoint naming a deleted one."""
    with pytest.raises(ConfigError, match=r"checkpoint .*nope\.pth: no such file"):
        DePOTRCheckpointer(nn.Linear(3, 2)).load(str(tmp_path / "nope.pth"))
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(ConfigError, match=r"last_checkpoint names the checkpoint .*model_0000009\.pth, which does not"):
        DePOTRCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)


def test_a_file_that_is_not_a_checkpoint_gets_our_error(tmp_path):
    readme = os.path.join(REPO, "README.md")
    with pytest.raises(ValueError, match="cannot read checkpoint .*README.md: it is not a checkpoint") as error:
        DePOTRCheckpointer(nn.Linear(3, 2)).load(readme)
    assert "weights_only" not in str(error.value)


def test_truncated_last_checkpoint_names_the_file_and_the_earlier_complete_one(tmp_path):
    model = nn.Linear(3, 2)
    checkpointer = DePOTRCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009")
    checkpointer.save("model_0000019")
    last = tmp_path / "model_0000019.pth"
    last.write_bytes(last.read_bytes()[:200])  # a disk that filled up, a partial copy
    with pytest.raises(
        ValueError,
        match=r"cannot read checkpoint .*model_0000019\.pth.*"
        r"newest complete earlier checkpoint is .*model_0000009\.pth",
    ):
        DePOTRCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
