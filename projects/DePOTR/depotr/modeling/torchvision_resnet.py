"""torchvision ResNet weights (the thesis' ImageNet initialisation) -> the names of Detectron2's
ResNet, our backbone: ``conv1``/``bn1`` -> ``stem.conv1`` (``.norm``), ``layer1..4.<block>.conv<k>``
/``bn<k>`` -> ``res2..5.<block>.conv<k>`` (``.norm``), ``downsample.0/1`` -> ``shortcut`` (``.norm``).
The file of :func:`save_detectron2_weights` has the layout of Detectron2's own converter
(``tools/convert-torchvision-to-d2.py``), so ``DetectionCheckpointer`` matches the names by suffix
into whichever module holds the ResNet. Each BatchNorm's weight, bias and running statistics are
kept (``RESNETS.NORM "FrozenBN"`` applies them as torchvision's BatchNorm in eval mode, "BN" starts
from them); ``num_batches_tracked`` and the classifier ``fc`` are left out.
"""

import pickle
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping

import torch

from ..file_io import atomic_write

__all__ = ["ConvertedResNet", "convert_torchvision_resnet", "save_detectron2_weights"]

_NORM_FIELDS = r"(weight|bias|running_mean|running_var)"
# (torchvision name pattern, Detectron2 name template); {s} is the stage (torchvision layer + 1).
_RENAMES = (
    (r"conv1\.weight", "stem.conv1.weight"),
    (rf"bn1\.{_NORM_FIELDS}", "stem.conv1.norm.{0}"),
    (r"layer([1-4])\.(\d+)\.conv([1-3])\.weight", "res{s}.{1}.conv{2}.weight"),
    (rf"layer([1-4])\.(\d+)\.bn([1-3])\.{_NORM_FIELDS}", "res{s}.{1}.conv{2}.norm.{3}"),
    (r"layer([1-4])\.(\d+)\.downsample\.0\.weight", "res{s}.{1}.shortcut.weight"),
    (rf"layer([1-4])\.(\d+)\.downsample\.1\.{_NORM_FIELDS}", "res{s}.{1}.shortcut.norm.{2}"),
)
_LEFT_OUT = re.compile(r"fc\.(weight|bias)|.*num_batches_tracked")
# (block type, blocks per stage) -> depth, as torchvision's resnet18 ... resnet152 build them.
_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


@dataclass
class ConvertedResNet:
    """A converted state dict and the ``MODEL.RESNETS`` settings that build a matching backbone."""

    state_dict: Dict[str, torch.Tensor]
    config: Dict[str, object]
    left_out: List[str] = field(default_factory=list)


def _rename(key: str) -> str:
    for pattern, template in _RENAMES:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            stage = int(groups[0]) + 1 if key.startswith("layer") else None
            return template.format(*groups, s=stage)
    raise ValueError(
        f"{key!r} is not a torchvision ResNet weight (expected conv1, bn1, layer1-4 blocks with conv/bn/downsample, fc)"
    )


def _resnets_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """The ``MODEL.RESNETS`` keys (and their values) of a Detectron2 ResNet with these weights."""
    blocks = {match.groups() for match in map(re.compile(r"layer([1-4])\.(\d+)\.").match, state_dict) if match}
    counts = tuple(sum(stage == str(s) for stage, _ in blocks) for s in range(1, 5))
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    if (block, counts) not in _DEPTHS:
        raise ValueError(
            f"{block} blocks per stage {counts} match no ResNet depth; expected one of "
            f"{sorted((b, c) for b, c in _DEPTHS)}"
        )
    config: Dict[str, object] = {"DEPTH": _DEPTHS[block, counts], "STRIDE_IN_1X1": False}
    if block == "basic":
        config["RES2_OUT_CHANNELS"] = 64
        return config
    # (out, in / groups, 3, 3): ResNeXt and wide ResNets share the names, not the widths.
    bottleneck_channels = state_dict["layer1.0.conv1.weight"].shape[0]
    groups = bottleneck_channels // state_dict["layer1.0.conv2.weight"].shape[1]
    config.update(
        NUM_GROUPS=groups,
        WIDTH_PER_GROUP=bottleneck_channels // groups,
        RES2_OUT_CHANNELS=state_dict["layer1.0.conv3.weight"].shape[0],
    )
    return config


def convert_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> ConvertedResNet:
    """Renames a torchvision ResNet state dict (``torchvision.models.resnet*().state_dict()``)
    to Detectron2's ResNet names. Raises a ValueError naming the first key that is not a
    torchvision ResNet weight, or the block layout when it matches no depth."""
    converted: Dict[str, torch.Tensor] = {}
    left_out = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key!r} holds a {type(value).__name__}, expected a tensor")
        if _LEFT_OUT.fullmatch(key):
            left_out.append(key)
            continue
        converted[_rename(key)] = value.detach().clone()
    if "stem.conv1.weight" not in converted:
        raise ValueError("no conv1.weight: not a torchvision ResNet state dict")
    return ConvertedResNet(converted, _resnets_config(state_dict), left_out)


def save_detectron2_weights(path: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Writes weights that ``DetectionCheckpointer`` loads by name suffix: ``.pkl`` (numpy
    arrays, as Detectron2's model zoo) or ``.pth`` (tensors)."""
    payload: Dict[str, object] = {"__author__": "torchvision", "matching_heuristics": True}
    if path.endswith(".pkl"):
        payload["model"] = {k: v.cpu().numpy() for k, v in state_dict.items()}
        atomic_write(path, lambda f: pickle.dump(payload, f))
    elif path.endswith(".pth"):
        payload["model"] = {k: v.cpu() for k, v in state_dict.items()}
        atomic_write(path, lambda f: torch.save(payload, f))
    else:
        raise ValueError(f"{path}: the output must end in .pkl or .pth")
