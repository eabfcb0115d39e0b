"""Person box -> crop geometry, the image <-> crop keypoint transforms and RoIAlign cropping.

Shape letters: B images, N persons (all images together), K keypoints, C channels,
(H, W) the crop size.

Coordinate convention (Detectron2's, ``ROIAlign(aligned=True)``): continuous pixel coordinates,
pixel i covers [i, i + 1) and has its centre at i + 0.5. A crop box (x0, y0, x1, y1) resampled
to W x H maps an image point x to the crop point u = (x - x0) * W / (x1 - x0) (same for y with
H); a horizontal flip of the crop maps u -> W - u.

The top-down cropping follows SimpleBaseline (Xiao et al. 2018): the person box is grown to the
crop's aspect ratio around its centre and then scaled by a padding factor (1.25). Instead of
their per-person ``cv2.warpAffine`` we resample all persons of a batch with one RoIAlign call.
"""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from detectron2.layers import ROIAlign

__all__ = [
    "check_boxes",
    "expand_boxes_to_aspect",
    "image_to_crop",
    "crop_to_image",
    "crop_images",
]


def check_boxes(boxes: Tensor, source: str, image_id: object) -> None:
    """Raises a ValueError naming the image and the box index if a box is degenerate.

    Args:
        boxes: (N, 4) XYXY boxes in image pixels.
        source: where the boxes come from ("gt", "precomputed", ...), for the message.
        image_id: the image's id (``batched_input["image_id"]``), for the message.
    """
    if boxes.numel() == 0:
        return
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    bad = ~(torch.isfinite(boxes).all(dim=1) & (widths > 0) & (heights > 0))
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{source} person box {index} of image {image_id!r} is degenerate: "
            f"{boxes[index].tolist()} (XYXY; width and height must be finite and > 0); "
            f"{int(bad.sum())} of {len(boxes)} boxes of this image are degenerate"
        )


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
        [
            torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1)
            for i, b in enumerate(crop_boxes)
            if len(b)
        ]
    ).to(device=images.device, dtype=images.dtype)
    pooler = ROIAlign((crop_h, crop_w), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    return pooler(images, rois)

