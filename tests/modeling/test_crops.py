"""Box -> crop geometry, image <-> crop keypoint transforms and RoIAlign cropping."""

import pytest
import torch

import depotr.modeling.crops as crops_module
from depotr.modeling.crops import (
    crop_images,
    crop_raw_images,
    crop_to_image,
    expand_boxes_to_aspect,
    image_to_crop,
)


def _random_boxes(n: int, generator: torch.Generator, dtype=torch.float64, image_size=(60.0, 80.0)) -> torch.Tensor:
    """(n, 4) XYXY boxes with positive size, many touching or crossing an image border."""
    h, w = image_size
    x0 = torch.rand(n, generator=generator, dtype=dtype) * (w + 40) - 20
    y0 = torch.rand(n, generator=generator, dtype=dtype) * (h + 40) - 20
    bw = torch.rand(n, generator=generator, dtype=dtype) * 70 + 0.5
    bh = torch.rand(n, generator=generator, dtype=dtype) * 70 + 0.5
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, w, h], dtype=dtype)  # the whole image, touching every border
    boxes[1] = torch.tensor([-10.0, 5.0, 30.0, h + 12.0], dtype=dtype)  # crossing two borders
    return boxes


@pytest.mark.parametrize("crop_size", [(256, 192), (64, 64), (48, 96)], ids=["256x192", "square", "wide"])
@pytest.mark.parametrize("padding", [1.0, 1.25], ids=["pad1", "pad1.25"])
@pytest.mark.parametrize("seed", [0, 1])
def test_expand_boxes_to_aspect(crop_size, padding, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(50, g)
    out = expand_boxes_to_aspect(boxes, crop_size, padding)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ow, oh = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    # Exactly W:H.
    torch.testing.assert_close(ow * crop_size[0], oh * crop_size[1], rtol=1e-12, atol=1e-9)
    # Same centre.
    torch.testing.assert_close(out[:, :2] + out[:, 2:], boxes[:, :2] + boxes[:, 2:], rtol=0, atol=1e-9)
    # Before padding, one side equals the box side and the other is grown (never shrunk).
    uw, uh = ow / padding, oh / padding
    assert bool(((uw - w).abs() < 1e-9).logical_or((uh - h).abs() < 1e-9).all())
    assert bool((uw >= w - 1e-9).all() and (uh >= h - 1e-9).all())
    # Contains the box.
    assert bool((out[:, :2] <= boxes[:, :2] + 1e-9).all() and (out[:, 2:] >= boxes[:, 2:] - 1e-9).all())


def test_expand_boxes_to_aspect_example():
    # 30 wide x 100 tall person, 4:3 crop: width grows to 75, then x1.25 -> 93.75 x 125.
    box = torch.tensor([[10.0, 0.0, 40.0, 100.0]])
    out = expand_boxes_to_aspect(box, (256, 192), 1.25)
    torch.testing.assert_close(out, torch.tensor([[25.0 - 46.875, 50.0 - 62.5, 25.0 + 46.875, 50.0 + 62.5]]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-3)], ids=["f64", "f32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_crop_transforms_are_inverses(dtype, tol, seed):
    g = torch.Generator().manual_seed(seed)
    crop_size = (256, 192)
    crop_boxes = expand_boxes_to_aspect(_random_boxes(20, g, dtype), crop_size, 1.25)
    points = torch.rand((20, 17, 3), generator=g, dtype=dtype) * 200 - 50  # inside and outside
    to_crop = image_to_crop(points, crop_boxes, crop_size)
    torch.testing.assert_close(crop_to_image(to_crop, crop_boxes, crop_size), points, rtol=0, atol=tol)
    back = image_to_crop(crop_to_image(points, crop_boxes, crop_size), crop_boxes, crop_size)
    torch.testing.assert_close(back, points, rtol=0, atol=tol)
    # Channels beyond (x, y) pass through untouched.
    assert torch.equal(to_crop[..., 2], points[..., 2])


def test_image_to_crop_example():
    crop_boxes = torch.tensor([[10.0, 20.0, 58.0, 84.0]])  # 48 x 64 -> crop W=24, H=32: scale 1/2
    points = torch.tensor([[[10.0, 20.0, 2.0], [58.0, 84.0, 1.0], [34.0, 52.0, 0.0]]])
    expected = torch.tensor([[[0.0, 0.0, 2.0], [24.0, 32.0, 1.0], [12.0, 16.0, 0.0]]])
    torch.testing.assert_close(image_to_crop(points, crop_boxes, (32, 24)), expected)


def _ramp_images(sizes):
    """Images whose channel 0 is x + 0.5, channel 1 is y + 0.5 (the continuous coordinate of each
    pixel centre) and channel 2 is the image index, zero-padded to one batch like ImageList."""
    hp, wp = max(s[0] for s in sizes), max(s[1] for s in sizes)
    batch = torch.zeros((len(sizes), 3, hp, wp), dtype=torch.float64)
    for i, (h, w) in enumerate(sizes):
        batch[i, 0, :h, :w] = torch.arange(w, dtype=torch.float64) + 0.5
        batch[i, 1, :h, :w] = (torch.arange(h, dtype=torch.float64) + 0.5)[:, None]
        batch[i, 2, :h, :w] = float(i + 1)
    return batch


def _crop_pixel_centres_in_image(crop_boxes, crop_size):
    h, w = crop_size
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij"
    )
    centres = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(len(crop_boxes), -1, -1)
    return crop_to_image(centres, crop_boxes, crop_size).reshape(len(crop_boxes), h, w, 2)


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2], ids=["adaptive", "sr1", "sr2"])
def test_crop_images_reads_crop_to_image_positions(sampling_ratio):
    """Bilinear sampling is exact on linear ramps: each crop pixel holds the image coordinates
    of its centre mapped by crop_to_image (boxes inside the half-pixel-inset image)."""
    sizes = [(40, 50), (30, 36)]
    images = _ramp_images(sizes)
    crop_size = (16, 12)
    boxes = [
        torch.tensor([[0.5, 0.5, 49.5, 39.5], [10.0, 3.0, 13.0, 7.0], [2.25, 7.5, 20.75, 31.0]], dtype=torch.float64),
        torch.tensor([[4.0, 1.0, 35.5, 29.5]], dtype=torch.float64),
    ]
    crops = crop_images(images, boxes, crop_size, sampling_ratio)
    assert crops.shape == (4, 3, 16, 12)
    expected_xy = _crop_pixel_centres_in_image(torch.cat(boxes), crop_size)
    torch.testing.assert_close(crops[:, 0], expected_xy[..., 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(crops[:, 1], expected_xy[..., 1], rtol=0, atol=1e-9)
    # Persons are ordered image by image and read their own image.
    torch.testing.assert_close(crops[:, 2].amax(dim=(1, 2)), torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(crops[:, 2].amin(dim=(1, 2)), torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("sampling_ratio", [0, 1], ids=["adaptive", "sr1"])
def test_crop_images_outside_image_is_zero(sampling_ratio):
    """A box crossing the border: inside it reads the ramp, outside the batch padding (0)."""
    sizes = [(40, 50), (30, 36)]
    images = _ramp_images(sizes)
    crop_size = (16, 16)
    boxes = [
        torch.tensor([[-20.0, -10.0, 20.0, 30.0]], dtype=torch.float64),
        torch.tensor([[16.0, 10.0, 56.0, 50.0]], dtype=torch.float64),
    ]
    crops = crop_images(images, boxes, crop_size, sampling_ratio)
    centres = _crop_pixel_centres_in_image(torch.cat(boxes), crop_size)
    half_bin = 40.0 / 16 / 2  # every sample of a bin lies within +-half_bin of its centre
    for i, (h, w) in enumerate(sizes):
        x, y = centres[i, ..., 0], centres[i, ..., 1]
        inside = (x - half_bin >= 0.5) & (x + half_bin <= w - 0.5) & (y - half_bin >= 0.5) & (y + half_bin <= h - 0.5)
        if i == 0:  # beyond the padded tensor RoIAlign reads 0 (past its half-pixel edge clamp)
            outside = (x + half_bin < -0.5) | (y + half_bin < -0.5)
        else:  # inside the padded tensor but past the image: the zero padding
            outside = (x - half_bin >= w + 0.5) | (y - half_bin >= h + 0.5)
        assert inside.any() and outside.any()
        torch.testing.assert_close(crops[i, 0][inside], x[inside], rtol=0, atol=1e-9)
        torch.testing.assert_close(crops[i, 1][inside], y[inside], rtol=0, atol=1e-9)
        assert bool((crops[i][:, outside] == 0).all())


@pytest.mark.parametrize("counts", [(0, 0), (0, 2)], ids=["all-empty", "first-empty"])
def test_crop_images_empty(counts):
    images = torch.rand((2, 3, 20, 30))
    boxes = [torch.tensor([[1.0, 2.0, 9.0, 12.0]]).repeat(n, 1) for n in counts]
    crops = crop_images(images, boxes, (8, 6))
    assert crops.shape == (sum(counts), 3, 8, 6)


MEAN = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
STD = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2], ids=["adaptive", "sr1", "sr2"])
@pytest.mark.parametrize("band_elements", [1 << 22, 40], ids=["one-band", "many-bands"])
def test_crop_raw_images_equals_roi_align_on_each_normalised_image(sampling_ratio, band_elements, monkeypatch):
    """The banded, separable crop of uint8 images gives what RoIAlign gives on each image's
    float copy, inside, across and outside the borders, for boxes smaller and larger than crops."""
    monkeypatch.setattr(crops_module, "_BAND_ELEMENTS", band_elements)
    g = torch.Generator().manual_seed(sampling_ratio)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in [(37, 53), (5, 7)]]
    boxes = [
        torch.tensor(
            [
                [3.2, 4.1, 20.7, 30.3],
                [-10.0, -5.0, 15.0, 20.0],
                [48.0, 34.0, 83.0, 77.0],
                [-100.0, -100.0, -50.0, -40.0],
                [0.0, 0.0, 53.0, 37.0],
                [-1e3, -1e3, 1e3, 1e3],
            ]
        ),
        torch.tensor([[1.0, 1.0, 1.4, 1.7], [-2.0, 0.5, 6.0, 4.0]]),
    ]
    crops = crop_raw_images(images, boxes, (16, 12), sampling_ratio, MEAN, STD)
    expected = torch.cat(
        [crop_images(((im.float() - MEAN) / STD)[None], [b], (16, 12), sampling_ratio) for im, b in zip(images, boxes)]
    )
    assert crops.shape == (8, 3, 16, 12) and crops.dtype == torch.float32
    torch.testing.assert_close(crops, expected, rtol=0, atol=2e-6)
    assert bool((crops[3] == 0).all())  # wholly outside: the mean colour, 0 once normalised


def test_crop_raw_images_empty():
    images = [torch.zeros((3, 20, 30), dtype=torch.uint8)] * 2
    assert crop_raw_images(images, [torch.zeros((0, 4))] * 2, (8, 6), 0, MEAN, STD).shape == (0, 3, 8, 6)
