"""The heatmap heads: features -> (B, K, H/s, W/s) heatmaps of stride ``stride``. B crops, K
keypoints, d width, (H, W) crop.

- :class:`DePOTRHeatmapHead`: DePOTR-HM (the seed thesis).
- :class:`DePOTRDotProductHeatmapHead`: DePOTR-HM with dot-product heatmaps.
- :class:`SimpleBaselineHead`: SimpleBaseline (Xiao et al. 2018, ``lib/models/pose_resnet.py``).
- :class:`TransPoseHead`: TransPose-R (Yang et al. 2021, ``lib/models/transpose_r.py``).

All end in SimpleBaseline's deconvolution stack and final conv (:func:`deconv_stack`,
:func:`heatmap_predictor`), except the dot-product head.
"""

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from ..position_encoding import PositionEmbeddingSine
from .mlp import MLP

# ConvTranspose2d kernel size -> (padding, output_padding) that exactly doubles the resolution.
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
COARSE_STRIDE = 16  # stride of the map each DePOTR-HM query's MLP produces
_NUM_DECONV_LAYERS = 2  # DePOTR-HM: 16 -> 4


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


class DePOTRHeatmapHead(nn.Module):
    """DePOTR-HM's head: each keypoint query's decoder output (B, K, d) becomes a coarse
    (H/16, W/16) map of C0 channels, two stride-2 deconvolutions bring it to H/4 and a 3x3 conv
    refines it. The K C0 maps are channels, as the thesis' ConvTranspose2d(17 -> 17)."""

    # Backbone maps the head reads besides the decoder's outputs (the body passes them on).
    pixel_features: Tuple[str, ...] = ()

    def __init__(
        self,
        hidden_dim: int,
        num_keypoints: int,
        crop_size: Tuple[int, int],
        initial_channels: int = 1,
        mlp_layers: int = 1,
    ):
        """crop_size: (H, W), each divisible by 16. initial_channels: C0. mlp_layers: layers of
        the per-keypoint MLP d -> (H/16)(W/16)C0."""
        super().__init__()
        height, width = crop_size
        if height % COARSE_STRIDE or width % COARSE_STRIDE:
            raise ValueError(f"DePOTR-HM needs a crop size divisible by {COARSE_STRIDE}, got {crop_size}")
        self.coarse_size = (height // COARSE_STRIDE, width // COARSE_STRIDE)
        self.stride = COARSE_STRIDE // 2**_NUM_DECONV_LAYERS
        self.channels = num_keypoints * initial_channels
        coarse_values = self.coarse_size[0] * self.coarse_size[1] * initial_channels
        self.mlp = MLP(hidden_dim, hidden_dim, coarse_values, mlp_layers)
        self.deconv = deconv_stack(self.channels, self.channels, _NUM_DECONV_LAYERS, kernel_size=3)
        self.predictor = heatmap_predictor(self.channels, num_keypoints, 3)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        """features: "hidden_states" (n, B, K, d) of the decoder; the last layer is used."""
        hidden = features["hidden_states"][-1]
        # (B, K, (H/16)(W/16)C0) -> (B, K C0, H/16, W/16), keypoint-major channels
        coarse = self.mlp(hidden).view(hidden.shape[0], self.channels, *self.coarse_size)
        return self.predictor(self.deconv(coarse))


class DePOTRDotProductHeatmapHead(nn.Module):
    """DePOTR-HM with heatmaps from dot products (``HEATMAP.DECODER "dot_product"``), stride 4.

    Pixel features P (B, d, H/4, W/4) = conv1x1(ReLU(GN(proj(res2) + up2(memory_0)))), memory_0
    the encoder's finest level (stride 8) upsampled bilinearly; query k's decoder output h_k gives
    e_k = MLP(h_k) (d) and heatmap k = e_k . P / sqrt(d) + b_k. The spatial detail comes from the
    pixel features, not from an MLP that has to draw a map, so it is learnt from far fewer samples.
    """

    stride = 4
    pixel_features: Tuple[str, ...] = ("res2",)

    def __init__(self, hidden_dim: int, num_keypoints: int, fine_channels: int, mlp_layers: int = 2):
        """hidden_dim: d, a multiple of 32 (GroupNorm). fine_channels: channels of res2.
        mlp_layers: layers of the query embedding MLP d -> d."""
        super().__init__()
        self.num_keypoints = num_keypoints
        self.fine_proj = nn.Conv2d(fine_channels, hidden_dim, kernel_size=1)
        self.norm = nn.GroupNorm(32, hidden_dim)
        self.pixel_proj = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1)
        self.embed = MLP(hidden_dim, hidden_dim, hidden_dim, mlp_layers)
        self.bias = nn.Parameter(torch.zeros(num_keypoints))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        """features: "hidden_states" (n, B, K, d) (the last layer is used), "memory" (finest
        level (B, d, H/8, W/8) first) and "res2" (B, C2, H/4, W/4)."""
        fine = features["res2"]
        coarse = torch.nn.functional.interpolate(
            features["memory"][0], size=fine.shape[-2:], mode="bilinear", align_corners=False
        )
        pixels = self.pixel_proj(torch.relu(self.norm(self.fine_proj(fine) + coarse)))
        embeddings = self.embed(features["hidden_states"][-1])  # (B, K, d)
        heatmaps = torch.einsum("bkd,bdhw->bkhw", embeddings, pixels) / pixels.shape[1] ** 0.5
        return heatmaps + self.bias[:, None, None]


class SimpleBaselineHead(nn.Module):
    """SimpleBaseline: the backbone map ``in_feature`` of stride s -> N x [deconv + BN + ReLU] ->
    1x1 conv: heatmaps of stride s / 2^N (``stride``)."""

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

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        return self.predictor(self.deconv(features[self.in_feature]))


class TransPoseHead(nn.Module):
    """TransPose-R: the backbone map ``in_feature`` of stride s, reduced to d channels by a 1x1
    conv, goes through a transformer encoder with 2D sine positions (DETR), one stride-2 deconv of
    d channels (kernel 4) and a 1x1 conv: heatmaps of stride s / 2. Unlike TransPose, the position
    embedding is added once to the encoder input (``nn.TransformerEncoder``), not in every layer.
    """

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

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        x = self.reduce(features[self.in_feature])
        batch, channels, height, width = x.shape
        pos = self.position_embedding(height, width, x.device, x.dtype).flatten(1).transpose(0, 1)
        tokens = self.encoder(x.flatten(2).transpose(1, 2) + pos)  # (B, h w, d)
        x = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.predictor(self.deconv(x))
