"""DePOTR-HM's heatmap head (the seed thesis): each keypoint query's decoder output becomes a
coarse (H/16, W/16) map, two stride-2 deconvolutions bring it to H/4, a 3x3 conv refines it.
The K maps are treated as channels, as the thesis' ConvTranspose2d(17 -> 17)."""

from typing import Dict, Tuple

import torch
from torch import nn

from .mlp import MLP
from .simple_baseline import deconv_stack, heatmap_predictor

_COARSE_STRIDE = 16  # stride of the map each query's MLP produces
_NUM_DECONV_LAYERS = 2  # 16 -> 4


class DePOTRHeatmapHead(nn.Module):
    """B crops, K keypoints, d width, C0 channels per keypoint, (H, W) crop. Decoder output
    (B, K, d) -> (B, K, H/4, W/4) heatmaps."""

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
        """
        Args:
            hidden_dim: d.
            num_keypoints: K.
            crop_size: (H, W), each divisible by 16.
            initial_channels: C0.
            mlp_layers: layers of the per-keypoint MLP d -> (H/16)(W/16)C0.
        """
        super().__init__()
        height, width = crop_size
        if height % _COARSE_STRIDE or width % _COARSE_STRIDE:
            raise ValueError(f"DePOTR-HM needs a crop size divisible by {_COARSE_STRIDE}, got {crop_size}")
        self.coarse_size = (height // _COARSE_STRIDE, width // _COARSE_STRIDE)
        self.stride = _COARSE_STRIDE // 2**_NUM_DECONV_LAYERS
        self.channels = num_keypoints * initial_channels
        coarse_values = self.coarse_size[0] * self.coarse_size[1] * initial_channels
        self.mlp = MLP(hidden_dim, hidden_dim, coarse_values, mlp_layers)
        self.deconv = deconv_stack(self.channels, self.channels, _NUM_DECONV_LAYERS, kernel_size=3)
        self.predictor = heatmap_predictor(self.channels, num_keypoints, 3)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features: "hidden_states" (n, B, K, d) of the decoder; the last layer is used.
        Returns (B, K, H/4, W/4)."""
        hidden = features["hidden_states"][-1]
        # (B, K, (H/16)(W/16)C0) -> (B, K C0, H/16, W/16), keypoint-major channels
        coarse = self.mlp(hidden).view(hidden.shape[0], self.channels, *self.coarse_size)
        return self.predictor(self.deconv(coarse))


class DePOTRDotProductHeatmapHead(nn.Module):
    """DePOTR-HM with heatmaps from dot products (``HEATMAP.DECODER "dot_product"``). B crops,
    K keypoints, d width, (H, W) crop.

    Pixel features P (B, d, H/4, W/4) = ReLU(GN(proj(res2) + up2(memory_0))) then a 1x1 conv,
    where memory_0 is the encoder's finest level (stride 8) upsampled bilinearly; each query's
    decoder output h_k gives an embedding e_k = MLP(h_k) (d) and heatmap k = e_k . P / sqrt(d)
    + b. The heatmap's spatial detail comes from the pixel features, not from an MLP that has
    to draw a map (the thesis' head), so it is learnt from far fewer samples.
    """

    stride = 4
    # Backbone maps the head reads besides the decoder's outputs (the body passes them on).
    pixel_features: Tuple[str, ...] = ("res2",)

    def __init__(self, hidden_dim: int, num_keypoints: int, fine_channels: int, mlp_layers: int = 2):
        """
        Args:
            hidden_dim: d (a multiple of 32: GroupNorm).
            num_keypoints: K.
            fine_channels: channels of the stride-4 backbone map (res2).
            mlp_layers: layers of the query embedding MLP d -> d.
        """
        super().__init__()
        self.num_keypoints = num_keypoints
        self.fine_proj = nn.Conv2d(fine_channels, hidden_dim, kernel_size=1)
        self.norm = nn.GroupNorm(32, hidden_dim)
        self.pixel_proj = nn.Conv2d(hidden_dim, hidden_dim, kernel_size=1)
        self.embed = MLP(hidden_dim, hidden_dim, hidden_dim, mlp_layers)
        self.bias = nn.Parameter(torch.zeros(num_keypoints))

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """features: "hidden_states" (n, B, K, d), "memory" (finest level (B, d, H/8, W/8)
        first) and "res2" (B, C2, H/4, W/4). The last decoder layer is used. Returns
        (B, K, H/4, W/4)."""
        fine = features["res2"]
        coarse = torch.nn.functional.interpolate(
            features["memory"][0], size=fine.shape[-2:], mode="bilinear", align_corners=False
        )
        pixels = self.pixel_proj(torch.relu(self.norm(self.fine_proj(fine) + coarse)))
        embeddings = self.embed(features["hidden_states"][-1])  # (B, K, d)
        heatmaps = torch.einsum("bkd,bdhw->bkhw", embeddings, pixels) / pixels.shape[1] ** 0.5
        return heatmaps + self.bias[:, None, None]
