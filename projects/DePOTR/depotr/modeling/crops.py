"""Person box -> crop geometry, the image <-> crop keypoint transforms and RoIAlign cropping.

Shape letters: B images, N persons (all images together), K keypoints, C channels,
(H, W) the crop size.

Coordinate convention (Detectron2's, ``ROIAlign(aligned=True)``): continuous pixel coordinates,
pixel i covers [i, i + 1) and has its centre at i + 0.5. A crop box (x0, y0, x1, y1) resampled
to W x H maps an image point x to the crop point u = (x - x0) * W / (x1 - x0) (same for y with
H); a horizontal flip of the crop maps u -> W - u.

The top-down cropping follows SimpleBaseline (Xiao et al. 2018): the person box is grown to the
crop's aspect ratio around its centre and then scaled by a padding factor (1.25). Instead of
their per-person ``cv2.warpAffine`` we resample all persons of a training batch with one RoIAlign
call (:func:`crop_images`). Inference crops straight from the uint8 images
(:func:`crop_raw_images`): the same RoIAlign, written as the two 1-D resamplings it factors into,
applied to a band of image rows at a time, so that no image is ever converted to float whole (a
10000 x 10000 photo would need 1.2 GB per float copy).
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from detectron2.layers import ROIAlign

__all__ = [
    "expand_boxes_to_aspect",
    "image_to_crop",
    "crop_to_image",
    "crop_images",
    "crop_raw_images",
]

# Image elements converted to float at a time by crop_raw_images (16 MiB of float32).
_BAND_ELEMENTS = 1 << 22


def expand_boxes_to_aspect(boxes: Tensor, crop_size: Sequence[int], padding: float) -> Tensor:
    """Grows boxes to the crop's aspect ratio W:H around their centres, then scales them.

    The short side (relative to W:H) is grown, never shrunk, so the result contains the box;
    then width and height are multiplied by ``padding`` (SimpleBaseline's 1.25).

    Args:
        boxes: (N, 4) XYXY boxes with positive width and height.
        crop_size: (H, W) of the crop.
        padding: scale factor >= 1 applied after the aspect expansion.

    Returns:
        (N, 4) XYXY crop boxes with (x1 - x0) : (y1 - y0) = W : H, same dtype and device.
    """
    crop_h, crop_w = crop_size
    aspect = crop_w / crop_h  # width / height
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    too_narrow = w < h * aspect
    new_w = torch.where(too_narrow, h * aspect, w) * padding
    new_h = torch.where(too_narrow, h, w / aspect) * padding
    return torch.stack([cx - new_w * 0.5, cy - new_h * 0.5, cx + new_w * 0.5, cy + new_h * 0.5], dim=1)


def _scales(crop_boxes: Tensor, crop_size: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """Returns the (N, 1, 2) origin (x0, y0) and (N, 1, 2) scale (W / w, H / h) of each crop."""
    crop_h, crop_w = crop_size
    origin = crop_boxes[:, None, 0:2]
    size = crop_boxes[:, None, 2:4] - origin
    scale = torch.tensor([crop_w, crop_h], dtype=crop_boxes.dtype, device=crop_boxes.device) / size
    return origin, scale


def image_to_crop(points: Tensor, crop_boxes: Tensor, crop_size: Sequence[int]) -> Tensor:
    """Maps points from image pixels to crop pixels: u = (x - x0) * W / (x1 - x0).

    Args:
        points: (N, K, D) with D >= 2; channels 0, 1 are (x, y) in image pixels, further
            channels (visibility, score) are copied unchanged.
        crop_boxes: (N, 4) XYXY crop boxes in image pixels (from :func:`expand_boxes_to_aspect`).
        crop_size: (H, W) of the crops.

    Returns:
        (N, K, D): (u, y) in crop pixels of the W x H crop, other channels unchanged.
        :func:`crop_to_image` is its inverse.
    """
    origin, scale = _scales(crop_boxes.to(points.dtype), crop_size)
    out = points.clone()
    out[..., 0:2] = (points[..., 0:2] - origin) * scale
    return out


def crop_to_image(points: Tensor, crop_boxes: Tensor, crop_size: Sequence[int]) -> Tensor:
    """Maps points from crop pixels back to image pixels: x = u * (x1 - x0) / W + x0.

    The inverse of :func:`image_to_crop` (same arguments, same shapes).
    """
    origin, scale = _scales(crop_boxes.to(points.dtype), crop_size)
    out = points.clone()
    out[..., 0:2] = points[..., 0:2] / scale + origin
    return out


def crop_images(
    images: Tensor,
    crop_boxes: List[Tensor],
    crop_size: Sequence[int],
    sampling_ratio: int = 0,
) -> Tensor:
    """Resamples every person crop of a padded image batch with ONE RoIAlign call.

    ``ROIAlign(output_size=crop_size, spatial_scale=1.0, sampling_ratio, aligned=True)``:
    crop pixel (i, j) is the mean of bilinear samples spread evenly over the bin around its
    centre, i.e. image point ``crop_to_image(j + 0.5, i + 0.5)``. ``sampling_ratio`` 0 takes
    ceil(bin size) samples per bin side (anti-aliased when a large person is shrunk, one sample
    when the crop enlarges); n > 0 takes n x n. Outside the image the samples read the batch
    padding, which is 0 (pass normalised images, so that is the mean colour); beyond the padded
    tensor RoIAlign also returns 0, except for a half-pixel border where it repeats the edge.

    Args:
        images: (B, C, Hp, Wp) float image batch (normalised, padded, e.g. ``ImageList.tensor``).
        crop_boxes: B tensors (N_b, 4), XYXY crop boxes of image b in its pixels.
        crop_size: (H, W) of the output crops.
        sampling_ratio: RoIAlign's samples per bin side (0 = adaptive).

    Returns:
        (N, C, H, W) crops, persons ordered image by image as in ``crop_boxes``.
    """
    if len(crop_boxes) != images.shape[0]:
        raise ValueError(f"got {len(crop_boxes)} box lists for a batch of {images.shape[0]} images")
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    num = sum(len(b) for b in crop_boxes)
    if num == 0:
        return images.new_zeros((0, images.shape[1], crop_h, crop_w))
    rois = torch.cat(
        [torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1) for i, b in enumerate(crop_boxes) if len(b)]
    ).to(device=images.device, dtype=images.dtype)
    pooler = ROIAlign((crop_h, crop_w), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return pooler(images, rois)


def _roi_align_weights(start: float, end: float, out_size: int, size: int, sampling_ratio: int) -> Tuple[Tensor, int]:
    """RoIAlign (``aligned=True``) along one axis as a matrix.

    The box spans [start, end) of an axis of ``size`` pixels; returns ``(weights, first)`` with
    ``weights`` (out_size, S) float32 such that ``weights @ signal[first:first + S]`` is what
    torchvision's ``roi_align`` computes along that axis: per output pixel the mean of ``grid``
    bilinear samples at the bin's sub-centres, 0 for samples beyond one pixel outside the axis,
    the edge value within it. Positions are computed in float32 in torchvision's order.
    """
    start_t = torch.tensor(start, dtype=torch.float32) - 0.5
    length = torch.tensor(end, dtype=torch.float32) - 0.5 - start_t
    bin_size = length / out_size
    grid = sampling_ratio if sampling_ratio > 0 else max(int(math.ceil(float(length / out_size))), 1)
    steps = torch.arange(out_size, dtype=torch.float32)[:, None] * bin_size
    offsets = (torch.arange(grid, dtype=torch.float32) + 0.5) * bin_size / grid
    pos = start_t + steps + offsets  # (out_size, grid)
    valid = ((pos >= -1.0) & (pos <= size)).float()
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.float())
    weights = torch.zeros(out_size, size + 1, dtype=torch.float32)
    weights.scatter_add_(1, low, (1.0 - frac) * valid / grid)
    weights.scatter_add_(1, low + 1, frac * valid / grid)  # at the edge frac = 0: adds 0 past it
    weights = weights[:, :size]
    used = weights.any(dim=0).nonzero()
    if len(used) == 0:
        return weights[:, :0], 0
    first, last = int(used[0]), int(used[-1]) + 1
    return weights[:, first:last], first


def crop_raw_images(
    images: Sequence[Tensor],
    crop_boxes: List[Tensor],
    crop_size: Sequence[int],
    sampling_ratio: int,
    pixel_mean: Tensor,
    pixel_std: Tensor,
) -> Tensor:
    """Normalised person crops of images of any size and dtype, without a float copy of a whole image.

    The result equals :func:`crop_images` on each image alone, normalised ((image - pixel_mean) /
    pixel_std, so that what lies outside the image reads 0), up to float rounding: RoIAlign's
    bilinear samples factor into a row and a column resampling (:func:`_roi_align_weights`),
    applied to the image rows under each crop a band of ``_BAND_ELEMENTS`` values at a time.

    Args:
        images: B tensors (C, H_b, W_b), e.g. uint8 pixel values (``batched_input["image"]``).
        crop_boxes: B tensors (N_b, 4), XYXY crop boxes of image b in its pixels.
        crop_size: (H, W) of the crops. sampling_ratio: as :func:`crop_images`.
        pixel_mean, pixel_std: (C, 1, 1) float normalisation, on the images' device.

    Returns:
        (N, C, H, W) float32 crops, persons ordered image by image as in ``crop_boxes``.
    """
    if len(crop_boxes) != len(images):
        raise ValueError(f"got {len(crop_boxes)} box lists for {len(images)} images")
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    crops = []
    for image, boxes in zip(images, crop_boxes):
        channels, height, width = image.shape
        for x0, y0, x1, y1 in boxes.detach().to("cpu", torch.float64).tolist():
            rows, top = _roi_align_weights(y0, y1, crop_h, height, sampling_ratio)
            cols, left = _roi_align_weights(x0, x1, crop_w, width, sampling_ratio)
            rows, cols = rows.to(image.device), cols.to(image.device)
            crop = torch.zeros(channels, crop_h, crop_w, device=image.device)
            num_rows, num_cols = rows.shape[1], cols.shape[1]
            band = max(1, _BAND_ELEMENTS // max(1, channels * num_cols))
            for r in range(0, num_rows, band):
                end = min(r + band, num_rows)
                pixels = image[:, top + r : top + end, left : left + num_cols].float()
                crop += rows[:, r:end] @ (pixels @ cols.T)
            coverage = rows.sum(dim=1)[:, None] * cols.sum(dim=1)[None, :]  # RoIAlign of an all-ones image
            crops.append((crop - pixel_mean * coverage) / pixel_std)
    if not crops:
        return torch.zeros((0, images[0].shape[0] if len(images) else 3, crop_h, crop_w))
    return torch.stack(crops)
