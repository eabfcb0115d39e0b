"""Gaussian heatmap codec of the heatmap heads, as mmpose's ``codecs/msra_heatmap.py``.

Continuous crop pixels (pixel i covers [i, i+1), centre i + 0.5); a heatmap of stride s has the
coordinate u / s, so a horizontal flip of the crop (u -> W - u) is exactly the array flip of the
heatmap along its width. Targets: unnormalised Gaussians (peak 1, SimpleBaseline). Decoding: argmax,
then ``"none"``, ``"shift"`` (a quarter pixel toward the higher neighbour, SimpleBaseline) or
``"dark"`` (Taylor expansion of the log of the blurred heatmap; Zhang et al. 2020, DARK).
"""

import math
from typing import Tuple

import torch
from torch.nn import functional as F

from .losses import keypoint_target_weights

REFINE_MODES = ("none", "shift", "dark")
# Largest DARK step per axis, heatmap pixels. A sampled Gaussian's argmax is within 0.5 px of its
# peak, but trained heatmaps gain from longer steps (the main job's AP: 66.59 at 0.5, 66.76 at 1.0
# and unbounded); the bound stops a step on a nearly flat log from leaving the crop.
DARK_MAX_STEP = 1.0


class HeatmapCodec:
    """B crops, K keypoints, (H, W) crop, (h, w) = (H / stride, W / stride) heatmap."""

    def __init__(self, crop_size: Tuple[int, int], stride: int, sigma: float, refine: str = "shift"):
        """stride: crop pixels per heatmap pixel, dividing H and W. sigma: the Gaussian's standard
        deviation in heatmap pixels. refine: sub-pixel refinement, one of ``REFINE_MODES``."""
        height, width = crop_size
        if height % stride or width % stride:
            raise ValueError(f"crop size {crop_size} is not divisible by the heatmap stride {stride}")
        if refine not in REFINE_MODES:
            raise ValueError(f"unknown heatmap refinement {refine!r}; expected one of {REFINE_MODES}")
        self.crop_size = (height, width)
        self.stride = stride
        self.heatmap_size = (height // stride, width // stride)
        self.sigma = sigma
        self.refine = refine

    def encode(self, keypoints: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """keypoints: (B, K, 3) (x, y, v) in crop pixels. Returns the target heatmaps
        (B, K, h, w), all-zero for unsupervised keypoints, and the (B, K) target weights of
        :func:`keypoint_target_weights`."""
        h, w = self.heatmap_size
        centres_x = torch.arange(w, dtype=keypoints.dtype, device=keypoints.device) + 0.5
        centres_y = torch.arange(h, dtype=keypoints.dtype, device=keypoints.device) + 0.5
        mu = keypoints[..., :2] / self.stride  # (B, K, 2)
        gauss_x = torch.exp(-((centres_x - mu[..., 0:1]) ** 2) / (2 * self.sigma**2))  # (B, K, w)
        gauss_y = torch.exp(-((centres_y - mu[..., 1:2]) ** 2) / (2 * self.sigma**2))  # (B, K, h)
        weights = keypoint_target_weights(keypoints, self.crop_size)
        heatmaps = gauss_y[..., :, None] * gauss_x[..., None, :] * weights[..., None, None]
        return heatmaps, weights

    def decode(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """heatmaps: (B, K, h, w). Returns (B, K, 3): (x, y) in crop pixels and the score, the
        heatmap maximum."""
        scores, index = heatmaps.flatten(2).max(dim=-1)
        x, y = index % heatmaps.shape[-1], index // heatmaps.shape[-1]
        coords = torch.stack((x, y), dim=-1).to(heatmaps.dtype) + 0.5
        if self.refine == "shift":
            coords = coords + shift_offsets(heatmaps, x, y)
        elif self.refine == "dark":
            coords = coords + dark_offsets(heatmaps, x, y, self.sigma)
        return torch.cat((coords * self.stride, scores[..., None]), dim=-1)


def neighbourhoods(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """heatmaps: (B, K, h, w); x, y: (B, K) pixel indices. Returns the (B, K, 3, 3) values around
    (y, x), indexed [row offset + 1, column offset + 1]; borders are replicated."""
    batch, num_keypoints, height, width = heatmaps.shape
    padded = F.pad(heatmaps.flatten(0, 1)[:, None], (1, 1, 1, 1), mode="replicate")
    padded = padded.view(batch, num_keypoints, (height + 2) * (width + 2))
    offsets = torch.arange(3, device=heatmaps.device)
    rows = y[..., None, None] + offsets[:, None]  # (B, K, 3, 1) rows in the padded map
    cols = x[..., None, None] + offsets[None, :]  # (B, K, 1, 3)
    index = (rows * (width + 2) + cols).flatten(2)  # (B, K, 9)
    return padded.gather(2, index).view(batch, num_keypoints, 3, 3)


def _interior(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, K) masks: the maximum has both horizontal / both vertical neighbours."""
    height, width = heatmaps.shape[-2:]
    return (x >= 1) & (x <= width - 2), (y >= 1) & (y <= height - 2)


def shift_offsets(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Returns (B, K, 2) offsets in heatmap pixels: +-0.25 toward the higher neighbour along each
    axis, 0 on the border or on a tie (SimpleBaseline's ``get_final_preds``)."""
    patch = neighbourhoods(heatmaps, x, y)
    inside_x, inside_y = _interior(heatmaps, x, y)
    dx = torch.sign(patch[..., 1, 2] - patch[..., 1, 0]) * inside_x
    dy = torch.sign(patch[..., 2, 1] - patch[..., 0, 1]) * inside_y
    return 0.25 * torch.stack((dx, dy), dim=-1)


def dark_offsets(heatmaps: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Returns (B, K, 2) DARK offsets in heatmap pixels: the heatmaps are blurred with the target
    Gaussian (sigma, in heatmap pixels) rescaled to their maxima, and the Newton step
    -Hessian^-1 gradient of their log at the maximum is taken from central differences, clamped
    to +-``DARK_MAX_STEP`` per axis (an unclamped step on a nearly flat log can leave the crop).
    0 on the border, where the
    heatmap maximum is not positive (no log-Gaussian) or where the log is not locally concave.
    The blur pads with zeros, as DarkPose's and mmpose's ``gaussian_blur``: a maximum within 3 sigma
    of the border is pulled toward the centre (sigma 2: 0.66 px at 1.3 px from the edge, 0.10 at
    3 px); replicate padding errs outward by more (0.80 and 0.32 px, 1.21 at 2 px)."""
    radius = max(1, math.ceil(3 * sigma))
    kernel = torch.arange(-radius, radius + 1, dtype=heatmaps.dtype, device=heatmaps.device)
    kernel = torch.exp(-(kernel**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = heatmaps.flatten(0, 1)[:, None]  # (B K, 1, h, w)
    blurred = F.conv2d(flat, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1), padding=(0, radius))
    peak = flat.amax(dim=(-2, -1), keepdim=True)
    blurred = blurred * peak / blurred.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-10)
    log = blurred.clamp(min=1e-10).log().view_as(heatmaps)

    p = neighbourhoods(log, x, y)
    dx = 0.5 * (p[..., 1, 2] - p[..., 1, 0])
    dy = 0.5 * (p[..., 2, 1] - p[..., 0, 1])
    dxx = p[..., 1, 2] - 2 * p[..., 1, 1] + p[..., 1, 0]
    dyy = p[..., 2, 1] - 2 * p[..., 1, 1] + p[..., 0, 1]
    dxy = 0.25 * (p[..., 2, 2] - p[..., 2, 0] - p[..., 0, 2] + p[..., 0, 0])
    det = dxx * dyy - dxy**2
    inside_x, inside_y = _interior(heatmaps, x, y)
    positive = peak.view(heatmaps.shape[:2]) > 0
    valid = inside_x & inside_y & positive & (det > 1e-12) & (dxx < 0)
    safe_det = torch.where(valid, det, torch.ones_like(det))
    offset_x = -(dyy * dx - dxy * dy) / safe_det
    offset_y = -(dxx * dy - dxy * dx) / safe_det
    return torch.stack((offset_x, offset_y), dim=-1).clamp(-DARK_MAX_STEP, DARK_MAX_STEP) * valid[..., None]
