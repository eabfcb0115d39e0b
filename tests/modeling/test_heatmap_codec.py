"""HeatmapCodec (encode / decode / refinement) and joints_mse_loss (flip_heatmaps: test_tta.py).

Convention under test: crop pixel i covers [i, i+1), centre i + 0.5; heatmap coordinate = crop
pixel / stride; heatmap pixel j has its centre at j + 0.5.
"""

import math
from typing import Tuple

import numpy as np
import pytest
import torch

from depotr.modeling.heads import HeatmapCodec, joints_mse_loss
from depotr.modeling.heads.heatmap_codec import DARK_MAX_STEP


def test_encode_hand_computed():
    codec = HeatmapCodec(crop_size=(16, 8), stride=4, sigma=1.0)
    # Crop pixel (6, 10) -> heatmap (1.5, 2.5): the centre of heatmap pixel (x=1, y=2).
    heatmaps, weights = codec.encode(torch.tensor([[[6.0, 10.0, 2.0]]]))
    assert heatmaps.shape == (1, 1, 4, 2)
    assert weights.tolist() == [[1.0]]
    expected = torch.tensor([[math.exp(-(dx**2 + dy**2) / 2) for dx in (-1, 0)] for dy in (-2, -1, 0, 1)])
    torch.testing.assert_close(heatmaps[0, 0], expected)
    assert heatmaps[0, 0, 2, 1] == 1.0


@pytest.mark.parametrize(
    "keypoint",
    [(6.0, 10.0, 0.0), (8.0, 10.0, 2.0), (-0.1, 3.0, 2.0), (3.0, 16.0, 1.0)],
    ids=["unlabelled", "right_edge_x_eq_W", "left_of_crop", "below_crop"],
)
def test_encode_unsupervised_keypoint_is_zero(keypoint):
    codec = HeatmapCodec(crop_size=(16, 8), stride=4, sigma=1.0)
    heatmaps, weights = codec.encode(torch.tensor([[keypoint]]))
    assert weights.tolist() == [[0.0]]
    assert heatmaps.abs().sum() == 0


@pytest.mark.parametrize(
    "refine, tolerance",
    [("none", 0.5), ("shift", 0.25), ("dark", 0.02)],
    ids=["none", "shift", "dark"],
)
@pytest.mark.parametrize("crop_size", [(256, 192), (384, 288)], ids=["256x192", "384x288"])
def test_round_trip(refine, tolerance, crop_size):
    torch.manual_seed(0)
    stride = 4
    height, width = crop_size
    sigma = 2.0 * (height / stride) / 64
    codec = HeatmapCodec(crop_size, stride, sigma, refine=refine)
    # Sub-pixel keypoints at least 4 sigma from the border (DARK's blur is zero-padded).
    margin = 4 * sigma * stride
    xy = torch.rand(8, 17, 2, dtype=torch.float64)
    xy = margin + xy * torch.tensor([width - 2 * margin, height - 2 * margin], dtype=torch.float64)
    keypoints = torch.cat((xy, torch.full((8, 17, 1), 2.0, dtype=torch.float64)), dim=-1)
    heatmaps, _ = codec.encode(keypoints)
    decoded = codec.decode(heatmaps)
    error = (decoded[..., :2] - xy).abs() / stride  # heatmap pixels, per axis
    assert error.max() <= tolerance + 1e-6
    torch.testing.assert_close(decoded[..., 2], heatmaps.flatten(2).amax(-1))


def _rendered_gaussians(peaks: np.ndarray, size: Tuple[int, int], sigma: float) -> torch.Tensor:
    """Heatmaps drawn with numpy, independently of HeatmapCodec.encode: a Gaussian of ``sigma``
    heatmap pixels at each peak (P, 2) (x, y in heatmap coordinates, pixel j's centre at j + 0.5).
    Returns (1, P, h, w)."""
    height, width = size
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    maps = [np.exp(-((centres_x[None, :] - x) ** 2 + (centres_y[:, None] - y) ** 2) / (2 * sigma**2)) for x, y in peaks]
    return torch.from_numpy(np.stack(maps)[None]).float()


@pytest.mark.parametrize("sigma", [1.0, 2.0], ids=["sigma1", "sigma2"])
def test_sub_pixel_peak_errors_dark_below_0_1_and_shift_below_0_3_heatmap_pixels(sigma):
    # The thresholds, as Euclidean distances in heatmap pixels, on 200 peaks at random
    # sub-pixel positions of a 64x48 heatmap (at least 4 sigma from the border).
    rng = np.random.default_rng(0)
    height, width, stride = 64, 48, 4
    margin = 4 * sigma
    peaks = rng.uniform([margin, margin], [width - margin, height - margin], size=(200, 2))
    heatmaps = _rendered_gaussians(peaks, (height, width), sigma)
    errors = {}
    for refine in ("none", "shift", "dark"):
        codec = HeatmapCodec((height * stride, width * stride), stride, sigma, refine=refine)
        decoded = codec.decode(heatmaps)[0, :, :2].double().numpy() / stride
        errors[refine] = np.linalg.norm(decoded - peaks, axis=1)
    assert errors["dark"].max() < 0.1
    assert errors["shift"].mean() < 0.3 and errors["shift"].max() < 0.36  # <= 0.25 per axis
    assert errors["shift"].mean() < errors["none"].mean()  # the shift helps on average


@pytest.mark.parametrize("edge", ["left", "right", "top"])
@pytest.mark.parametrize("distance", [1.3, 2.0, 3.0])
def test_dark_near_border_bias_points_inward_and_stays_below_0_7_heatmap_pixels(edge, distance):
    # A peak within the blur radius (3 sigma) of the border: the zero-padded blur (DarkPose's and
    # mmpose's gaussian_blur) pulls it toward the centre, by at most 0.66 px (at 1.3 px from the
    # edge) for sigma 2. Replicate padding errs outward instead, by up to 1.2 px (clamped steps).
    sigma, height, width, stride = 2.0, 64, 48, 4
    peak = {"left": (distance, 32.3), "right": (width - distance, 32.3), "top": (24.3, distance)}[edge]
    inward, axis = {"left": (1, 0), "right": (-1, 0), "top": (1, 1)}[edge]
    heatmaps = _rendered_gaussians(np.array([peak]), (height, width), sigma)
    decoded = HeatmapCodec((height * stride, width * stride), stride, sigma, refine="dark").decode(heatmaps)
    error = decoded[0, 0, :2].double().numpy() / stride - np.array(peak)  # heatmap pixels
    assert 0 <= inward * error[axis] < 0.7
    assert abs(error[1 - axis]) < 0.02  # the other axis is in the interior


@pytest.mark.parametrize(
    "peak, expected",
    [((0.3, 32.3), (0.5, 32.5)), ((24.3, 32.3), (24.3, 32.3))],
    ids=["on_border_pixel", "interior"],
)
def test_dark_keeps_the_argmax_centre_on_a_border_pixel_and_is_exact_inside(peak, expected):
    # 0.3 px from the edge the maximum is on border pixel 0: neither axis is refined (the argmax
    # pixel centre); in the interior DARK recovers the drawn centre (the round trip's 0.02 px).
    sigma, height, width, stride = 2.0, 64, 48, 4
    heatmaps = _rendered_gaussians(np.array([peak]), (height, width), sigma)
    decoded = HeatmapCodec((height * stride, width * stride), stride, sigma, refine="dark").decode(heatmaps)
    np.testing.assert_allclose(decoded[0, 0, :2].double().numpy() / stride, expected, atol=0.02)


def test_shift_quarter_pixel_toward_higher_neighbour():
    heatmaps = torch.zeros(1, 2, 4, 5)
    heatmaps[0, 0, 1, 2], heatmaps[0, 0, 1, 3], heatmaps[0, 0, 0, 2] = 1.0, 0.5, 0.2  # right, up
    heatmaps[0, 1, 3, 0] = 0.7  # corner: no neighbours on one side -> no shift
    decoded = HeatmapCodec((16, 20), 4, 1.0, refine="shift").decode(heatmaps)
    expected = torch.tensor([[[(2.75) * 4, (1.25) * 4, 1.0], [0.5 * 4, 3.5 * 4, 0.7]]])
    torch.testing.assert_close(decoded, expected)


@pytest.mark.parametrize("refine", ["none", "shift", "dark"])
def test_decode_empty(refine):
    decoded = HeatmapCodec((256, 192), 4, 2.0, refine=refine).decode(torch.zeros(0, 17, 64, 48))
    assert decoded.shape == (0, 17, 3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="divisible"):
        HeatmapCodec((250, 192), 4, 2.0)
    with pytest.raises(ValueError, match="refinement"):
        HeatmapCodec((256, 192), 4, 2.0, refine="argmax")


def test_joints_mse_loss_value_and_mask():
    pred = torch.ones(1, 2, 2, 2, requires_grad=True)
    target = torch.zeros(1, 2, 2, 2)
    loss = joints_mse_loss(pred, target, torch.tensor([[1.0, 0.0]]))
    # 0.5 x (4 pixels x 1) / (B K h w = 8)
    torch.testing.assert_close(loss, torch.tensor(0.25))
    loss.backward()
    assert pred.grad[0, 1].abs().sum() == 0
    torch.testing.assert_close(pred.grad[0, 0], torch.full((2, 2), 2 * 0.5 / 8))


@pytest.mark.parametrize("batch", [0, 2], ids=["empty_batch", "all_unlabelled"])
def test_joints_mse_loss_without_supervision_is_zero_and_backpropagates(batch):
    pred = torch.rand(batch, 17, 4, 3, requires_grad=True)
    loss = joints_mse_loss(pred, torch.rand(batch, 17, 4, 3), torch.zeros(batch, 17))
    assert loss.item() == 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-1.0, 0.0)], ids=["positive_noise", "negative_noise"])
def test_dark_step_stays_within_its_bound_of_the_argmax_centre(low, high):
    # Noise heatmaps (an untrained or unsure head): the Newton step on a nearly flat log was
    # unbounded (up to 107 crop px, outside the 48-px-wide crop), and an all-negative heatmap was
    # rescaled by peak / 1e-10 < 0, which flipped its sign (steps of 53 px).
    stride = 4
    codec = HeatmapCodec((64, 48), stride, 1.0, refine="dark")
    generator = torch.Generator().manual_seed(0)
    heatmaps = low + (high - low) * torch.rand(4, 17, 16, 12, generator=generator)
    dark = codec.decode(heatmaps)
    codec.refine = "none"
    argmax_centres = codec.decode(heatmaps)
    offsets = (dark[..., :2] - argmax_centres[..., :2]) / stride  # heatmap pixels
    assert offsets.abs().max() <= DARK_MAX_STEP + 1e-6
    if high <= 0:  # no log-Gaussian without a positive maximum: no refinement
        assert offsets.abs().max() == 0
    else:
        assert offsets.abs().max() > 0.1  # the clamp does not switch the refinement off
