"""ResNet feature maps and their projection to L levels of width d.

The projection is Deformable DETR's ``input_proj`` (Zhu et al. 2021, ``models/deformable_detr.py``):
a 1x1 conv + GroupNorm(32) per backbone level, and for each level beyond the backbone's a 3x3
stride-2 conv + GroupNorm(32), applied to the last backbone map (res5) for the first extra level
and to the previous extra level after that.
"""

from typing import List, Sequence

from torch import Tensor, nn

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone, build_resnet_backbone


def build_resnet(cfg: CfgNode, out_features: Sequence[str]) -> Backbone:
    """Detectron2's ResNet of ``MODEL.RESNETS`` / ``MODEL.BACKBONE.FREEZE_AT`` on 3-channel crops,
    with ``out_features`` instead of ``MODEL.RESNETS.OUT_FEATURES`` (later stages are not built)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = list(out_features)
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


class MultiLevelProjection(nn.Module):
    """B crops, L levels, d width. Maps the backbone maps, (B, C_l, H_l, W_l) of ``in_channels``
    finest first, to L >= len(in_channels) maps (B, d, H_l, W_l), the extra ones each halving the
    resolution. d is a multiple of 32 (GroupNorm)."""

    def __init__(self, in_channels: Sequence[int], hidden_dim: int, num_levels: int):
        super().__init__()
        if num_levels < len(in_channels):
            raise ValueError(f"{num_levels} feature levels < {len(in_channels)} backbone feature maps")
        layers: List[nn.Module] = [
            nn.Sequential(nn.Conv2d(channels, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))
            for channels in in_channels
        ]
        last_channels = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(last_channels, hidden_dim, kernel_size=3, stride=2, padding=1),
                    nn.GroupNorm(32, hidden_dim),
                )
            )
            last_channels = hidden_dim
        self.layers = nn.ModuleList(layers)
        self.num_backbone_levels = len(in_channels)
        for layer in self.layers:
            nn.init.xavier_uniform_(layer[0].weight, gain=1)
            nn.init.constant_(layer[0].bias, 0)

    def forward(self, features: Sequence[Tensor]) -> List[Tensor]:
        if len(features) != self.num_backbone_levels:
            raise ValueError(f"expected {self.num_backbone_levels} feature maps, got {len(features)}")
        srcs = [layer(x) for layer, x in zip(self.layers, features)]
        last = features[-1]
        for layer in self.layers[self.num_backbone_levels :]:
            last = layer(last)
            srcs.append(last)
        return srcs
