"""torchvision ResNet weights in our Detectron2 backbone (depotr.modeling.torchvision_resnet and
tools/convert_torchvision_backbone.py): every tensor lands, features equal torchvision's."""

import os
import re
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn
from torchvision.transforms.functional import normalize

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.modeling.backbone import ResNet

from depotr.cli import run_main
from depotr.config import load_depotr_config
from depotr.modeling import build_resnet
from depotr.modeling.torchvision_resnet import convert_torchvision_resnet, save_detectron2_weights
from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_CONFIG = os.path.join(REPO, "configs", "Base-DePOTR.yaml")
INSTANT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "depotr_hm_r18_synthetic_instant_test.yaml")
# torchvision's ImageNet normalisation of [0, 1] RGB images (its weights' documented transform).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STAGES = ["res2", "res3", "res4", "res5"]


def _torchvision_resnet(depth: int) -> nn.Module:
    """Random weights, and random norm statistics so that a misplaced tensor changes features."""
    torch.manual_seed(depth)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _torchvision_features(model: nn.Module, x: torch.Tensor) -> list:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    features = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        features.append(x)
    return features


def _resnets_opts(config: dict, norm: str) -> list:
    opts = ["MODEL.RESNETS.NORM", norm, "MODEL.BACKBONE.FREEZE_AT", "0"]
    for key, value in config.items():
        opts += [f"MODEL.RESNETS.{key}", str(value)]
    return opts


def _state(module: nn.Module) -> dict:
    return {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize(
    "depth, norm, suffix", [(18, "FrozenBN", ".pkl"), (18, "BN", ".pth"), (50, "FrozenBN", ".pth"), (50, "BN", ".pkl")]
)
def test_converted_weights_give_torchvision_features(tmp_path, depth, norm, suffix):
    torchvision_model = _torchvision_resnet(depth)
    converted = convert_torchvision_resnet(torchvision_model.state_dict())
    assert converted.config["DEPTH"] == depth and converted.config["STRIDE_IN_1X1"] is False
    path = str(tmp_path / f"r{depth}{suffix}")
    save_detectron2_weights(path, converted.state_dict)

    cfg = load_depotr_config(BASE_CONFIG, _resnets_opts(converted.config, norm))
    backbones = []
    for seed in (1, 2):  # two random initialisations: a tensor left unloaded would differ
        torch.manual_seed(seed)
        backbones.append(build_resnet(cfg, STAGES))
    assert not torch.equal(backbones[0].stem.conv1.weight, backbones[1].stem.conv1.weight)
    for backbone in backbones:
        DetectionCheckpointer(backbone).load(path)
    first, second = _state(backbones[0]), _state(backbones[1])
    assert first.keys() == converted.state_dict.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
        assert torch.equal(value, converted.state_dict[name]), name

    # Same RGB image, each side with its own statement of the ImageNet normalisation.
    assert cfg.INPUT.FORMAT == "RGB"
    image = torch.randint(0, 256, (2, 3, 96, 64), generator=torch.Generator().manual_seed(0)).float()
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, 3, 1, 1)
    backbone = backbones[0].eval()
    with torch.no_grad():
        ours = backbone((image - mean) / std)
        theirs = _torchvision_features(torchvision_model, normalize(image / 255, IMAGENET_MEAN, IMAGENET_STD))
    for stage, expected in zip(STAGES, theirs):
        torch.testing.assert_close(ours[stage], expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item(), msg=stage)


def test_converter_tool_output_loads_into_a_depotr_model(tmp_path, capsys):
    torchvision_model = _torchvision_resnet(18)
    torch.save(torchvision_model.state_dict(), tmp_path / "resnet18.pth")
    tool = load_script("tools/convert_torchvision_backbone.py")
    assert tool.main([str(tmp_path / "resnet18.pth"), str(tmp_path / "r18.pkl")]) == 0
    out = capsys.readouterr().out
    assert "ResNet-18" in out and "fc.weight fc.bias" in out
    assert "MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.STRIDE_IN_1X1 False MODEL.RESNETS.RES2_OUT_CHANNELS 64" in out

    model = build_model(load_depotr_config(INSTANT_CONFIG, ["MODEL.WEIGHTS", str(tmp_path / "r18.pkl")]))
    DetectionCheckpointer(model).load(str(tmp_path / "r18.pkl"))
    (resnet,) = [m for m in model.modules() if isinstance(m, ResNet)]
    expected = convert_torchvision_resnet(torchvision_model.state_dict()).state_dict
    loaded = _state(resnet)
    assert loaded.keys() == expected.keys()
    for name, value in loaded.items():
        assert torch.equal(value, expected[name]), name


def test_wide_and_grouped_resnets_report_their_widths():
    config = convert_torchvision_resnet(torchvision.models.resnext50_32x4d(weights=None).state_dict()).config
    assert config == {
        "DEPTH": 50,
        "STRIDE_IN_1X1": False,
        "NUM_GROUPS": 32,
        "WIDTH_PER_GROUP": 4,
        "RES2_OUT_CHANNELS": 256,
    }


@pytest.mark.parametrize(
    "state_dict, match",
    [
        ({"conv1.weight": torch.zeros(1), "head.weight": torch.zeros(1)}, "'head.weight' is not a torchvision ResNet"),
        ({"bn1.weight": torch.zeros(1)}, "no conv1.weight"),
        ({"conv1.weight": 3}, "holds a int, expected a tensor"),
        ({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}, r"blocks per stage \(1, 0, 0, 0\)"),
    ],
    ids=["foreign_key", "no_stem", "not_a_tensor", "unknown_depth"],
)
def test_bad_state_dicts_are_rejected(state_dict, match):
    with pytest.raises(ValueError, match=match):
        convert_torchvision_resnet(state_dict)


def test_output_must_be_pkl_or_pth(tmp_path):
    with pytest.raises(ValueError, match=r"\.pkl or \.pth"):
        save_detectron2_weights(str(tmp_path / "weights.pt"), {})


def test_converter_tool_checks_the_output_folder_first_and_names_the_output(tmp_path, capsys):
    output = tmp_path / "missing" / "r18.pkl"
    with pytest.raises(SystemExit):  # before the (missing) input is read
        load_script("tools/convert_torchvision_backbone.py").main([str(tmp_path / "resnet18.pth"), str(output)])
    err = capsys.readouterr().err
    assert f"output {output}: its folder {output.parent} does not exist" in err and ".tmp-" not in err


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"cannot read \S*in\.pth as a torch state dict \(FileNotFoundError: .*No such file"),
        ([1, 2], r"\S*in\.pth holds a list, expected a state dict$"),
        ({"bn1.weight": torch.zeros(1)}, r"\S*in\.pth: no conv1\.weight"),
    ],
    ids=["missing", "not-a-dict", "not-a-resnet"],
)
def test_converter_tool_bad_input_is_one_error_line_and_status_2(tmp_path, capsys, content, message):
    """The friction: status 1, where docs/tools.md says path mistakes end in one `error: ...` line
    and status 2, as the other tools (depotr.cli.run_main)."""
    if content is not None:
        torch.save(content, tmp_path / "in.pth")
    tool = load_script("tools/convert_torchvision_backbone.py")
    assert run_main(tool.main, [str(tmp_path / "in.pth"), str(tmp_path / "r18.pkl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match("error: " + message, err), err
    assert not (tmp_path / "r18.pkl").exists()


def test_converter_tool_prints_no_third_party_warnings(tmp_path):
    # Its module-level Detectron2 import printed four torch.jit.script FutureWarnings before main ran.
    argv = [str(tmp_path / "missing.pth"), str(tmp_path / "r18.pkl")]
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert_torchvision_backbone.py"), *argv],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: cannot read "), done.stderr
    assert "Warning" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
