"""SimpleBaseline's deconvolution head (Xiao et al. 2018, "Simple Baselines for Human Pose
Estimation and Tracking", ``lib/models/pose_resnet.py``): res5 -> N x [ConvTranspose2d stride 2 +
BN + ReLU] -> 1x1 conv -> K heatmaps. The deconvolution stack and the final conv are reused by the
DePOTR-HM and TransPose heads."""

from typing import Dict

import torch
from torch import nn

# ConvTranspose2d kernel size -> (padding, output_padding) that exactly doubles the resolution.
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


def deconv_stack(in_channels: int, channels: int, num_layers: int, kernel_size: int) -> nn.Sequential:
    """num_layers x [ConvTranspose2d(stride 2) + BatchNorm + ReLU], each doubling the resolution;
    initialised as SimpleBaseline (weights N(0, 0.001), BN identity)."""
    if kernel_size not in _DECONV_PADDING:
        raise ValueError(f"deconvolution kernel must be one of {sorted(_DECONV_PADDING)}, got {kernel_size}")
    padding, output_padding = _DECONV_PADDING[kernel_size]
    layers = []
    for _ in range(num_layers):
        deconv = nn.ConvTranspose2d(
            in_channels, channels, kernel_size, stride=2, padding=padding, output_padding=output_padding, bias=False
        )
        nn.init.normal_(deconv.weight, std=0.001)
        layers += [deconv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        in_channels = channels
    return nn.Sequential(*layers)


def heatmap_predictor(in_channels: int, num_keypoints: int, kernel_size: int) -> nn.Conv2d:
    """The final conv to K heatmaps ('same' padding), initialised N(0, 0.001) as SimpleBaseline."""
    conv = nn.Conv2d(in_channels, num_keypoints, kernel_size, padding=kernel_size // 2)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    return conv


class SimpleBaselineHead(nn.Module):
    """B crops, K keypoints. Backbone map of stride s -> (B, K, H / s', W / s') heatmaps with
    s' = s / 2^num_deconv_layers (``stride``)."""

    def __init__(
        self,
        in_feature: str,
        in_channels: int,
        in_stride: int,
        num_keypoints: int,
        num_deconv_layers: int = 3,
        deconv_channels: int = 256,
        deconv_kernel: int = 4,
    ):
        super().__init__()
        if in_stride % 2**num_deconv_layers:
            raise ValueError(f"{num_deconv_layers} deconvolutions cannot upsample a stride-{in_stride} map")
        self.in_feature = in_feature
        self.stride = in_stride // 2**num_deconv_layers
        self.deconv = deconv_stack(in_channels, deconv_channels, num_deconv_layers, deconv_kernel)
        self.predictor = heatmap_predictor(deconv_channels, num_keypoints, 1)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features: backbone maps, ``in_feature`` (B, C, h, w). Returns (B, K, h 2^N, w 2^N)."""
        return self.predictor(self.deconv(features[self.in_feature]))
