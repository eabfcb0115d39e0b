"""TransPose-R's head (Yang et al. 2021, "TransPose: Keypoint Localization via Transformer",
``lib/models/transpose_r.py``): the stride-8 ResNet map is reduced to d channels by a 1x1 conv,
its pixels go through a standard transformer encoder with 2D sine positions (DETR), then one
stride-2 deconvolution and a 1x1 conv give K heatmaps at stride 4.

Difference: we use ``nn.TransformerEncoder`` and add the position embedding once to its input;
TransPose adds it to the queries and keys of every layer.
"""

from typing import Dict

import torch
from torch import nn

from ..position_encoding import PositionEmbeddingSine
from .simple_baseline import deconv_stack, heatmap_predictor


class TransPoseHead(nn.Module):
    """B crops, K keypoints, d width. Backbone map of stride s -> (B, K, H / (s/2), W / (s/2))."""

    def __init__(
        self,
        in_feature: str,
        in_channels: int,
        in_stride: int,
        num_keypoints: int,
        hidden_dim: int = 256,
        nheads: int = 8,
        num_layers: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
    ):
        """The deconvolution has d channels and kernel 4 (TransPose-R: 256 = d)."""
        super().__init__()
        self.in_feature = in_feature
        self.stride = in_stride // 2
        self.reduce = nn.Conv2d(in_channels, hidden_dim, kernel_size=1, bias=False)
        self.position_embedding = PositionEmbeddingSine(hidden_dim // 2)
        layer = nn.TransformerEncoderLayer(hidden_dim, nheads, dim_feedforward, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.deconv = deconv_stack(hidden_dim, hidden_dim, 1, kernel_size=4)
        self.predictor = heatmap_predictor(hidden_dim, num_keypoints, 1)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features: backbone maps, ``in_feature`` (B, C, h, w). Returns (B, K, 2h, 2w)."""
        x = self.reduce(features[self.in_feature])
        batch, channels, height, width = x.shape
        pos = self.position_embedding(height, width, x.device, x.dtype).flatten(1).transpose(0, 1)
        tokens = self.encoder(x.flatten(2).transpose(1, 2) + pos)  # (B, h w, d)
        x = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.predictor(self.deconv(x))
