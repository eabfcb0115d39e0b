"""Crop parameters, the image <-> crop affine and the one crop operation (rotated RoIAlign)."""

import math

import pytest
import torch
from torchvision.ops import roi_align

import depotr.modeling.crops as crops_module
from depotr.modeling.crops import (
    MAX_SAMPLING_RATIO,
    box_crop_params,
    crop_images,
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


def _params(boxes: torch.Tensor, angle=0.0, flip=0.0) -> torch.Tensor:
    """(N, 6) crop parameters of XYXY crop boxes, written out independently of the module."""
    n = len(boxes)
    extra = torch.tensor([[float(angle), float(flip)]], dtype=boxes.dtype).expand(n, 2)
    return torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2], extra], dim=1)


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
    # The crop parameters are that box, unrotated and unflipped.
    torch.testing.assert_close(box_crop_params(boxes, crop_size, padding), _params(out))


def test_expand_boxes_to_aspect_example():
    # 30 wide x 100 tall person, 4:3 crop: width grows to 75, then x1.25 -> 93.75 x 125.
    box = torch.tensor([[10.0, 0.0, 40.0, 100.0]])
    out = expand_boxes_to_aspect(box, (256, 192), 1.25)
    torch.testing.assert_close(out, torch.tensor([[25.0 - 46.875, 50.0 - 62.5, 25.0 + 46.875, 50.0 + 62.5]]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keypoints_into_a_crop_and_back_within_1e4_px(dtype, tol, seed):
    """Rotated and flipped crops of persons in a 640 x 480 image (realistic coordinates: the
    points lie in and around each crop)."""
    g = torch.Generator().manual_seed(seed)
    params = box_crop_params(_random_boxes(20, g, torch.float64, image_size=(480.0, 640.0)), (256, 192), 1.25)
    params[:, 4] = torch.rand(20, generator=g, dtype=torch.float64) * 180 - 90
    params[:, 5] = (torch.rand(20, generator=g) < 0.5).double()
    around = torch.rand((20, 17, 3), generator=g, dtype=torch.float64) * torch.tensor([384.0, 512.0, 2.0]) - 64
    points = crop_to_image(around, params, (256, 192)).to(dtype)
    params = params.to(dtype)
    to_crop = image_to_crop(points, params, (256, 192))
    torch.testing.assert_close(crop_to_image(to_crop, params, (256, 192)), points, rtol=0, atol=tol)
    if dtype == torch.float64:  # and crop -> image -> crop (in float32 its error is in crop px, scaled)
        back = image_to_crop(crop_to_image(around, params, (256, 192)), params, (256, 192))
        torch.testing.assert_close(back, around, rtol=0, atol=tol)
    assert torch.equal(to_crop[..., 2], points[..., 2])  # channels beyond (x, y) untouched


def test_image_to_crop_examples():
    # 48 x 64 box at (10, 20) -> crop W=24, H=32: scale 1/2.
    params = _params(torch.tensor([[10.0, 20.0, 58.0, 84.0]]))
    points = torch.tensor([[[10.0, 20.0, 2.0], [58.0, 84.0, 1.0], [34.0, 52.0, 0.0]]])
    expected = torch.tensor([[[0.0, 0.0, 2.0], [24.0, 32.0, 1.0], [12.0, 16.0, 0.0]]])
    torch.testing.assert_close(image_to_crop(points, params, (32, 24)), expected)
    # Flipped: u -> W - u.
    flipped = expected.clone()
    flipped[..., 0] = 24 - flipped[..., 0]
    torch.testing.assert_close(
        image_to_crop(points, _params(torch.tensor([[10.0, 20.0, 58.0, 84.0]]), 0, 1), (32, 24)), flipped
    )
    # Rotated 90 degrees counter-clockwise about the centre (34, 52): the crop's u axis points up
    # the image, its v axis right (2 image px per crop px), so the image point 4 px right of the
    # centre is 2 crop px below the crop centre (12, 16) and the one 4 px above it 2 crop px right.
    rotated = _params(torch.tensor([[10.0, 20.0, 58.0, 84.0]]), 90.0)
    points = torch.tensor([[[38.0, 52.0], [34.0, 48.0]]])
    torch.testing.assert_close(image_to_crop(points, rotated, (32, 24)), torch.tensor([[[12.0, 18.0], [14.0, 16.0]]]))


MEAN = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
STD = torch.tensor([57.375, 57.12, 58.395]).view(3, 1, 1)
SMALL_BOXES = [
    [3.2, 4.1, 20.7, 30.3],
    [-10.0, -5.0, 15.0, 20.0],
    [48.0, 34.0, 83.0, 77.0],
    [-100.0, -100.0, -50.0, -40.0],
    [0.0, 0.0, 53.0, 37.0],
    [1.0, 1.0, 1.4, 1.7],
    [-0.8, 30.0, 60.0, 37.9],
]


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2], ids=["adaptive", "sr1", "sr2"])
def test_unrotated_crop_equals_torchvision_roi_align(sampling_ratio):
    """Boxes smaller and larger than the crop, inside, across and outside the borders, two images."""
    g = torch.Generator().manual_seed(sampling_ratio)
    images = [torch.rand((3, h, w), generator=g, dtype=torch.float64) for h, w in [(37, 53), (5, 7)]]
    boxes = [
        torch.tensor(SMALL_BOXES, dtype=torch.float64),
        torch.tensor([[1.0, 1.0, 1.4, 1.7], [-2.0, 0.5, 6.0, 4.0]]),
    ]
    boxes[1] = boxes[1].double()
    crops = crop_images(images, [_params(b) for b in boxes], (16, 12), sampling_ratio)
    expected = torch.cat(
        [roi_align(im[None], [b], (16, 12), 1.0, sampling_ratio, True) for im, b in zip(images, boxes)]
    )
    assert crops.shape == (9, 3, 16, 12) and crops.dtype == torch.float64
    torch.testing.assert_close(crops, expected, rtol=0, atol=1e-12)
    assert bool((crops[3] == 0).all())  # wholly outside


def test_adaptive_sampling_is_capped():
    """A box 50x the crop size takes MAX_SAMPLING_RATIO samples per side, not 50."""
    image = torch.rand((1, 40, 30), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    box = torch.tensor([[-290.0, -380.0, 310.0, 420.0]], dtype=torch.float64)  # 600 x 800 for 12 x 16
    crop = crop_images([image], [_params(box)], (16, 12), 0)
    capped = roi_align(image[None], [box], (16, 12), 1.0, MAX_SAMPLING_RATIO, True)
    torch.testing.assert_close(crop, capped, rtol=0, atol=1e-12)
    assert not torch.allclose(crop, roi_align(image[None], [box], (16, 12), 1.0, 0, True))


@pytest.mark.parametrize("chunk", [1 << 21, 50], ids=["one-chunk", "many-chunks"])
def test_uint8_normalised_crop_equals_the_float_path(chunk, monkeypatch):
    """uint8 image + normalisation in the op == the op on the normalised float image (which is
    what a float copy of the whole image would give), whatever the chunking."""
    monkeypatch.setattr(crops_module, "_CHUNK_SAMPLES", chunk)
    g = torch.Generator().manual_seed(3)
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8, generator=g)
    params = _params(torch.tensor(SMALL_BOXES))
    params[::2, 4] = 25.0
    params[1::3, 5] = 1.0
    crops = crop_images([image], [params], (16, 12), 0, MEAN, STD)
    normalised = (image.double() - MEAN.double()) / STD.double()
    expected = crop_images([normalised], [params.double()], (16, 12), 0)
    assert crops.dtype == torch.float32 and crops.shape == (7, 3, 16, 12)
    torch.testing.assert_close(crops.double(), expected, rtol=0, atol=1e-4)
    assert bool((crops[3] == 0).all())  # wholly outside: the mean colour, 0 once normalised


def test_empty():
    images = [torch.zeros((3, 20, 30), dtype=torch.uint8)] * 2
    assert crop_images(images, [torch.zeros((0, 6))] * 2, (8, 6), 0, MEAN, STD).shape == (0, 3, 8, 6)
    first_empty = crop_images(images, [torch.zeros((0, 6)), _params(torch.tensor([[1.0, 2.0, 9.0, 12.0]]))], (8, 6))
    assert first_empty.shape == (1, 3, 8, 6)
    with pytest.raises(ValueError, match="1 crop parameter lists for 2 images"):
        crop_images(images, [torch.zeros((0, 6))], (8, 6))


@pytest.mark.parametrize("sampling_ratio", [0, 2], ids=["adaptive", "sr2"])
def test_rotated_90_equals_the_unrotated_crop_of_the_rotated_image(sampling_ratio):
    """A crop box turned 90 degrees counter-clockwise shows the image turned 90 degrees clockwise
    (torch.rot90 k=-1: image point (x, y) -> (Hi - y, x)) cropped by the axis-aligned box."""
    g = torch.Generator().manual_seed(4)
    image = torch.rand((3, 37, 53), generator=g, dtype=torch.float64)
    boxes = torch.tensor(SMALL_BOXES, dtype=torch.float64)
    turned = torch.rot90(image, k=-1, dims=(1, 2))  # (3, 53, 37)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    moved = torch.stack([37 - centre[:, 1], centre[:, 0]], dim=1)
    expected = roi_align(
        turned[None], [torch.cat([moved - size / 2, moved + size / 2], 1)], (16, 12), 1.0, sampling_ratio, True
    )
    crops = crop_images([image], [_params(boxes, angle=90.0)], (16, 12), sampling_ratio)
    torch.testing.assert_close(crops, expected, rtol=0, atol=1e-9)


def _slow_rotated_roi_align(image, cx, cy, w, h, angle, crop_size, grid):
    """Per-cell loop reference: samples on the rotated box's own axes, bilinear with roi_align's
    border rule, in plain Python."""
    channels, height, width = image.shape
    crop_h, crop_w = crop_size
    theta = math.radians(angle)
    axis_u = (math.cos(theta), -math.sin(theta))  # the box's width direction (CCW rotation, y down)
    axis_v = (math.sin(theta), math.cos(theta))
    out = torch.zeros((channels, crop_h, crop_w), dtype=torch.float64)
    for i in range(crop_h):
        for j in range(crop_w):
            total = torch.zeros(channels, dtype=torch.float64)
            for t in range(grid):
                for s in range(grid):
                    a = ((j + (s + 0.5) / grid) / crop_w - 0.5) * w
                    b = ((i + (t + 0.5) / grid) / crop_h - 0.5) * h
                    x = cx + a * axis_u[0] + b * axis_v[0] - 0.5
                    y = cy + a * axis_u[1] + b * axis_v[1] - 0.5
                    if y < -1 or y > height or x < -1 or x > width:
                        continue
                    y, x = min(max(y, 0.0), height - 1), min(max(x, 0.0), width - 1)
                    y0, x0 = int(y), int(x)
                    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                    ly, lx = y - y0, x - x0
                    total += (1 - ly) * ((1 - lx) * image[:, y0, x0] + lx * image[:, y0, x1])
                    total += ly * ((1 - lx) * image[:, y1, x0] + lx * image[:, y1, x1])
            out[:, i, j] = total / grid**2
    return out


@pytest.mark.parametrize("angle", [30.0, -115.0])
def test_rotated_crop_equals_a_slow_per_cell_reference(angle):
    g = torch.Generator().manual_seed(5)
    image = torch.rand((2, 23, 31), generator=g, dtype=torch.float64)
    cx, cy, w, h = 12.3, 9.1, 27.0, 36.0  # reaches past three borders once rotated
    params = torch.tensor([[cx, cy, w, h, angle, 0.0]], dtype=torch.float64)
    crop = crop_images([image], [params], (8, 6), 0)[0]  # bins of 4.5 px: 5 x 5 samples
    expected = _slow_rotated_roi_align(image, cx, cy, w, h, angle, (8, 6), grid=5)
    torch.testing.assert_close(crop, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 40.0])
def test_flip_mirrors_the_crop(angle):
    g = torch.Generator().manual_seed(6)
    image = torch.rand((3, 37, 53), generator=g, dtype=torch.float64)
    boxes = torch.tensor(SMALL_BOXES, dtype=torch.float64)
    plain = crop_images([image], [_params(boxes, angle)], (16, 12))
    flipped = crop_images([image], [_params(boxes, angle, flip=1.0)], (16, 12))
    torch.testing.assert_close(flipped, torch.flip(plain, dims=[-1]), rtol=0, atol=1e-12)


def test_large_uint8_image_is_cropped_in_bounded_chunks(monkeypatch):
    """A 3000 x 2000 uint8 photo, one person and the whole image: equals the float path on the
    region, and no chunk reads more than _CHUNK_SAMPLES samples."""
    g = torch.Generator().manual_seed(7)
    image = torch.randint(0, 256, (3, 2000, 3000), dtype=torch.uint8, generator=g)
    params = _params(torch.tensor([[1200.0, 700.0, 1500.0, 1100.0], [-200.0, -300.0, 3200.0, 2300.0]]))
    sizes = []
    sample = crops_module._sample
    monkeypatch.setattr(
        crops_module,
        "_sample",
        lambda image, rows, cols, *args: (
            sizes.append(rows[..., 0].numel() * cols.shape[1]) or sample(image, rows, cols, *args)
        ),
    )
    crops = crop_images([image], [params], (64, 48), 0, MEAN, STD)
    assert max(sizes) <= crops_module._CHUNK_SAMPLES
    # The first person from the float copy of its region only (the crop reads pixels 1199..1501).
    region = image[:, 690:1110, 1190:1510].double()
    shifted = params[:1].double().clone()
    shifted[:, :2] -= torch.tensor([1190.0, 690.0], dtype=torch.float64)
    expected = crop_images([(region - MEAN.double()) / STD.double()], [shifted], (64, 48), 0)
    # float32 positions near x = 1500 vs float64 ones near 300: ~1e-4 px apart, ~5e-4 in value.
    torch.testing.assert_close(crops[:1].double(), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("sampling_ratio", [0, 2], ids=["adaptive", "sr2"])
def test_equals_detectron2_roi_align_rotated_where_compiled(sampling_ratio):
    """Detectron2's ROIAlignRotated (same semantics; needs Detectron2's compiled extension, which
    the source-built route has and the v0.6 stand-in lacks)."""
    from detectron2.layers import ROIAlignRotated

    g = torch.Generator().manual_seed(8)
    image = torch.rand((3, 37, 53), generator=g)
    params = _params(torch.tensor(SMALL_BOXES))
    params[:, 4] = torch.tensor([0.0, 30.0, -60.0, 90.0, 12.5, -170.0, 45.0])
    rois = torch.cat([torch.zeros(len(params), 1), params[:, :5]], dim=1)
    try:
        expected = ROIAlignRotated((16, 12), 1.0, sampling_ratio)(image[None], rois)
    except NotImplementedError as e:
        pytest.skip(f"no compiled Detectron2 ops: {e}")
    torch.testing.assert_close(crop_images([image], [params], (16, 12), sampling_ratio), expected, rtol=0, atol=1e-5)
