"""Person crops: the crop parameters, their one image <-> crop affine and the one crop operation.

Shape letters: B images, N persons (all images together), K keypoints, C channels, (H, W) the crop
size. Continuous pixel coordinates (Detectron2's ``ROIAlign(aligned=True)``): pixel i covers
[i, i + 1) and has its centre at i + 0.5.

Crop parameters, one row per person, (N, 6) = (cx, cy, w, h, angle, flip): the crop box's centre
and size in image pixels, its rotation in degrees counter-clockwise (Detectron2's ``RotatedBoxes``)
and 1.0 where the crop is mirrored left-right. The crop point (u, v) shows the image point

    x = cx + cos(angle) a + sin(angle) b,  y = cy - sin(angle) a + cos(angle) b,
    a = +-(u - W / 2) w / W (minus when flipped),  b = (v - H / 2) h / H

(:func:`crop_affine`); keypoints go through the same affine both ways. Unrotated and unflipped, the
crop box is the XYXY box (cx -+ w / 2, cy -+ h / 2) and u = (x - x0) W / w.

The boxes are SimpleBaseline's (Xiao et al. 2018): grown to the crop's aspect ratio, then scaled
by a padding factor (1.25). Instead of a per-person ``cv2.warpAffine`` all persons of a batch are
cut by one call of :func:`crop_images`: Detectron2's ``ROIAlignRotated`` (``aligned=True``) in
torch (that op needs Detectron2's compiled extension, which the v0.6 route lacks), each crop pixel
the mean of S_h x S_w bilinear samples over its bin, so that a large person is not aliased.
"""

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MAX_SAMPLING_RATIO",
    "expand_boxes_to_aspect",
    "box_crop_params",
    "crop_affine",
    "image_to_crop",
    "crop_to_image",
    "crop_images",
]

# Largest adaptive number of samples per bin side. Only crop boxes more than 16 times the crop
# size (a person over ~3300 px tall at 256 x 192) reach it; their samples are then more than one
# image pixel apart, so detail finer than that may alias (as with any fixed sampling ratio).
MAX_SAMPLING_RATIO = 16
# Bilinear samples taken at a time by crop_images (~40 bytes each with their coordinates): a chunk
# of output rows whose image region alone is converted to float, so memory stays bounded.
_CHUNK_SAMPLES = 1 << 20


def expand_boxes_to_aspect(boxes: Tensor, crop_size: Sequence[int], padding: float) -> Tensor:
    """(N, 4) XYXY boxes -> (N, 4) XYXY crop boxes of aspect W:H (``crop_size`` (H, W)) about the
    same centres: the short side is grown (never shrunk, so the box is contained), then width and
    height are multiplied by ``padding`` >= 1 (SimpleBaseline's 1.25)."""
    aspect = crop_size[1] / crop_size[0]  # width / height
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    w, h = (boxes[:, 2:] - boxes[:, :2]).unbind(dim=1)
    too_narrow = w < h * aspect
    half = torch.stack([torch.where(too_narrow, h * aspect, w), torch.where(too_narrow, h, w / aspect)], dim=1)
    half = half * padding * 0.5
    return torch.cat([centre - half, centre + half], dim=1)


def box_crop_params(boxes: Tensor, crop_size: Sequence[int], padding: float) -> Tensor:
    """(N, 4) XYXY person boxes -> (N, 6) crop parameters of their :func:`expand_boxes_to_aspect`
    crop boxes, unrotated and unflipped."""
    crop_boxes = expand_boxes_to_aspect(boxes, crop_size, padding)
    centre = (crop_boxes[:, :2] + crop_boxes[:, 2:]) * 0.5
    no_turn = torch.zeros_like(centre)  # angle 0, no flip (zeros_like: a traced export keeps N free)
    return torch.cat([centre, crop_boxes[:, 2:] - crop_boxes[:, :2], no_turn], dim=1)


def crop_affine(params: Tensor, crop_size: Sequence[int], inverse: bool = False) -> Tensor:
    """The (N, 2, 3) float64 affine of each crop: crop pixels (u, v, 1) -> image pixels (module
    doc), or image -> crop with ``inverse``. params: (N, 6) crop parameters."""
    crop_h, crop_w = float(crop_size[0]), float(crop_size[1])
    cx, cy, w, h, angle, flip = params.double().unbind(dim=1)
    radians = angle * (math.pi / 180.0)  # not torch.deg2rad: ONNX has no such operator
    cos, sin = torch.cos(radians), torch.sin(radians)
    sign = 1.0 - 2.0 * (flip > 0.5).double()
    sx, sy = w / crop_w, h / crop_h
    if inverse:
        rows = [
            [sign * cos / sx, -sign * sin / sx, crop_w / 2 - sign * (cos * cx - sin * cy) / sx],
            [sin / sy, cos / sy, crop_h / 2 - (sin * cx + cos * cy) / sy],
        ]
    else:
        rows = [
            [sign * cos * sx, sin * sy, cx - sign * cos * sx * crop_w / 2 - sin * sy * crop_h / 2],
            [-sign * sin * sx, cos * sy, cy + sign * sin * sx * crop_w / 2 - cos * sy * crop_h / 2],
        ]
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


def _apply_affine(points: Tensor, matrix: Tensor) -> Tensor:
    """(N, K, D) points, channels 0, 1 = (x, y) moved by the (N, 2, 3) ``matrix`` (in float64),
    further channels copied; same dtype as ``points``."""
    xy = points[..., 0:2].double() @ matrix[:, :, :2].transpose(1, 2) + matrix[:, None, :, 2]
    return torch.cat([xy.to(points.dtype), points[..., 2:]], dim=-1)


def image_to_crop(points: Tensor, params: Tensor, crop_size: Sequence[int]) -> Tensor:
    """(N, K, D >= 2) points, (x, y) in image pixels -> (u, v) in the crop pixels of the (N, 6)
    crop parameters, further channels (visibility, score) copied; computed in float64, returned in
    ``points``' dtype. The keypoint order is kept: a flipped crop's left/right swap is the
    caller's (``crop_augmentation``)."""
    return _apply_affine(points, crop_affine(params, crop_size, inverse=True).to(points.device))


def crop_to_image(points: Tensor, params: Tensor, crop_size: Sequence[int]) -> Tensor:
    """Crop pixels -> image pixels: the inverse of :func:`image_to_crop` (same arguments and shapes)."""
    return _apply_affine(points, crop_affine(params, crop_size).to(points.device))


def _sampling_grids(params: Tensor, crop_size: Sequence[int], sampling_ratio: int) -> Tensor:
    """(N, 2) int64 samples per bin side (S_h, S_w): ``sampling_ratio`` if > 0, else RoIAlign's
    adaptive ceil(bin size), at least 1 and at most :data:`MAX_SAMPLING_RATIO`."""
    if sampling_ratio > 0:
        return torch.full((len(params), 2), int(sampling_ratio), dtype=torch.int64)
    size = params[:, [3, 2]].detach().cpu().double() / torch.tensor([float(crop_size[0]), float(crop_size[1])])
    return size.ceil().clamp(1, MAX_SAMPLING_RATIO).long()


def _sample(image: Tensor, at_rows: Tensor, at_cols: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """RoIAlign's bilinear samples of a (C, Hi, Wi) image, normalised ((v - mean) / std), at the
    pixel-index positions (continuous coordinate - 0.5) at_rows[:, i, None] + at_cols[:, None, j]
    (at_rows (R, Sr, 2), at_cols (R, Sc, 2)): (C, R, Sr, Sc) in their dtype, outside the image as
    :func:`crop_images` says. Only the image region under the positions (the bounding box of the
    grid's corners) is converted to float for ``F.grid_sample``."""
    size = [image.shape[2], image.shape[1]]  # (Wi, Hi)
    corners = (at_rows[:, [0, -1], None] + at_cols[:, None, [0, -1]]).reshape(-1, 2)
    first, last = corners.amin(dim=0).tolist(), corners.amax(dim=0).tolist()
    inside = all(0 <= a and b <= n - 1 for a, b, n in zip(first, last, size))  # then nothing to clamp
    low = [int(min(max(a, 0), n - 1)) for a, n in zip(first, size)]
    high = [int(min(max(b, 0), n - 1)) + 2 for b, n in zip(last, size)]
    region = image[:, low[1] : high[1], low[0] : high[0]].to(at_rows.dtype, copy=True)  # normalised in place
    region.sub_(mean).div_(std)
    # Per axis, grid_sample's normalised coordinate (align_corners=False) of position q is
    # q * scale + offset, scale = 2 / region size, offset = (1 - 2 low) / region size - 1.
    grid, valid = [], True
    for axis, n in enumerate(size):
        scale = 2.0 / region.shape[2 - axis]
        offset = (1.0 - 2.0 * low[axis]) / region.shape[2 - axis] - 1.0
        g = (at_rows[..., axis] * scale + offset)[:, :, None] + (at_cols[..., axis] * scale)[:, None]
        if not inside:  # positions in [-1, n] count, clamped to [0, n - 1]
            valid = valid & (g >= offset - scale) & (g <= n * scale + offset)
            g.clamp_(offset, (n - 1) * scale + offset)
        grid.append(g)
    grid = torch.stack(grid, dim=-1)
    values = F.grid_sample(region[None], grid.view(1, -1, 1, 2), padding_mode="border", align_corners=False)
    return values.view(region.shape[0], *grid.shape[:-1]) * valid


def crop_images(
    images: Sequence[Tensor],
    params: List[Tensor],
    crop_size: Sequence[int],
    sampling_ratio: int = 0,
    pixel_mean: Optional[Tensor] = None,
    pixel_std: Optional[Tensor] = None,
) -> Tensor:
    """Cuts every person crop of a batch: rotated RoIAlign (``aligned=True``) in torch.

    Crop pixel (i, j) is the mean of S_h x S_w bilinear samples at the crop points
    (j + (s + 0.5) / S_w, i + (t + 0.5) / S_h) mapped by :func:`crop_affine` (S:
    :func:`_sampling_grids`). Samples more than one pixel outside the image read 0 (the mean colour
    once normalised), within one pixel the edge value: unrotated and unflipped, the crop equals
    torchvision's ``roi_align(image, box, aligned=True)``. Images are never converted whole.

    Args:
        images: B tensors (C, H_b, W_b) of any dtype and size (e.g. uint8 ``batched_input["image"]``).
        params: B tensors (N_b, 6), the crop parameters of image b's persons.
        pixel_mean, pixel_std: (C, 1, 1) normalisation of the samples ((v - mean) / std), or None.

    Returns:
        (N, C, H, W) crops, image by image; float64 for float64 images, else float32.
    """
    if len(params) != len(images):
        raise ValueError(f"got {len(params)} crop parameter lists for {len(images)} images")
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    crops = []
    for image, image_params in zip(images, params):
        channels = image.shape[0]
        dtype = image.dtype if image.is_floating_point() else torch.float32
        out = torch.zeros((len(image_params), channels, crop_h, crop_w), dtype=dtype, device=image.device)
        crops.append(out)
        if len(image_params) == 0:
            continue
        mean = torch.zeros(()) if pixel_mean is None else pixel_mean
        std = torch.ones(()) if pixel_std is None else pixel_std
        mean, std = (t.to(image.device, dtype).reshape(-1, 1, 1) for t in (mean, std))
        matrix = crop_affine(image_params, (crop_h, crop_w)).to(image.device, dtype)
        matrix[:, :, 2] -= 0.5  # -> pixel-index coordinates
        grids = _sampling_grids(image_params, (crop_h, crop_w), sampling_ratio)
        # Image pixels per sample: beyond 1 (capped sampling) the float region outgrows the samples.
        box_areas = (image_params[:, 2] * image_params[:, 3]).detach().cpu().double()
        pixels_per_sample = box_areas / (crop_h * crop_w * grids.prod(1))
        for grid_h, grid_w in sorted(set(map(tuple, grids.tolist()))):
            group = (grids[:, 0] == grid_h) & (grids[:, 1] == grid_w)
            persons = torch.nonzero(group)[:, 0].to(image.device)
            u = (torch.arange(crop_w * grid_w, device=image.device, dtype=dtype) + 0.5) / grid_w
            dv = (torch.arange(grid_h, device=image.device, dtype=dtype) + 0.5) / grid_h
            rows = len(persons) * crop_h
            area = max(1.0, float(pixels_per_sample[group].max()))
            step = max(1, int(_CHUNK_SAMPLES / (crop_w * grid_w * grid_h * area)))
            for start in range(0, rows, step):  # chunks of R output rows
                index = torch.arange(start, min(start + step, rows), device=image.device)
                person, row = persons[index // crop_h], index % crop_h
                m = matrix[person]  # (R, 2, 3)
                v = row[:, None].to(dtype) + dv  # (R, grid_h)
                at_rows = m[:, None, :, 1] * v[..., None] + m[:, None, :, 2]  # (R, grid_h, 2)
                at_cols = m[:, None, :, 0] * u[:, None]  # (R, W grid_w, 2)
                values = _sample(image, at_rows, at_cols, mean, std)
                cells = F.avg_pool2d(values.view(channels, -1, crop_w * grid_w), (grid_h, grid_w))  # (C, R, W)
                out[person, :, row] = cells.transpose(0, 1)
    return torch.cat(crops) if crops else torch.zeros((0, 3, crop_h, crop_w))
