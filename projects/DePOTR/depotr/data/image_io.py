"""Images given as arrays or files -> (H, W, 3) uint8 BGR, as OpenCV and Detectron2's predictor
take them (:class:`depotr.Predictor`, the demo)."""

import os
import warnings
from typing import Optional, Union

import cv2
import numpy as np

__all__ = ["to_bgr_uint8", "read_image_bgr"]

EXPECTED = (
    "expected (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA with H, W > 0, dtype uint8, uint16 or float in [0, 1]"
)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Converts an (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA uint8, uint16 or float image
    to a contiguous (H, W, 3) uint8 BGR array (``image`` itself when it already is one): grey is
    repeated, alpha dropped (not blended), uint16 divided by 257 and rounded, float in [0, 1]
    multiplied by 255 and rounded; colour channels are not reordered.

    Raises:
        ValueError: another shape or dtype, or a float image outside [0, 1] (NaN included); the
            message gives the shape and dtype.
    """
    image = np.asarray(image)
    described = f"image of shape {image.shape} and dtype {image.dtype}"
    channels = image.shape[2] if image.ndim == 3 else (1 if image.ndim == 2 else 0)
    if channels not in (1, 3, 4) or image.size == 0:
        raise ValueError(f"unsupported {described}: {EXPECTED}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not bool(np.all((image >= 0.0) & (image <= 1.0))):
            raise ValueError(f"{described} has values outside [0, 1] (or NaN): {EXPECTED}")
        image = np.round(image.astype(np.float64) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported {described}: {EXPECTED}")
    if channels == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif channels == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def read_image_bgr(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads an image file as (H, W, 3) uint8 BGR (:func:`to_bgr_uint8`), EXIF orientation applied.

    JPEGs and WebPs are decoded by PIL, as Detectron2's ``read_image`` does, because PIL reports a
    truncated JPEG where OpenCV decodes a part and only warns, and OpenCV ignores a WebP's EXIF
    orientation; other files by OpenCV (any depth and colour), and those OpenCV cannot decode (GIF,
    a TIFF with an EXIF orientation tag) by PIL.

    Raises:
        FileNotFoundError: ``path`` does not exist (IsADirectoryError: it is a folder).
        ValueError: the file cannot be decoded, is a truncated or corrupt JPEG / WebP, or decodes to an
            array :func:`to_bgr_uint8` rejects.
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise IsADirectoryError(f"{name!r} is a folder, not an image file")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"image file {name!r} does not exist")
    kind = _pil_first_kind(name)
    image = _read_pil_bgr(name, kind) if kind else None
    if image is None:
        image = cv2.imread(name, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        image = _read_pil_bgr(name)
    if image is None:
        raise ValueError(f"cannot decode image file {name!r} (corrupt or not an image)")
    try:
        return to_bgr_uint8(image)
    except ValueError as e:
        raise ValueError(f"image file {name!r}: {e}") from e


_JPEG_START = b"\xff\xd8\xff"


def _pil_first_kind(path: str) -> Optional[str]:
    """ "JPEG" or "WebP" when ``path`` is one (read by PIL before OpenCV is tried), else None."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:3] == _JPEG_START:
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _read_pil_bgr(path: str, kind: Optional[str] = None) -> Optional[np.ndarray]:
    """``path`` decoded by Detectron2's ``read_image`` (PIL, EXIF orientation applied): (H, W, 3)
    BGR uint8; None when it is too large for PIL, or when PIL cannot read it and ``kind`` is None
    (a file OpenCV could not decode either). With ``kind`` (:func:`_pil_first_kind`), a ValueError
    when it is truncated or corrupt."""
    from PIL import Image

    from detectron2.data.detection_utils import read_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return read_image(path, format="BGR")
    except Image.DecompressionBombError:
        return None
    except (OSError, ValueError) as e:
        if kind is None:
            return None
        raise ValueError(f"{kind} file {path!r} is truncated or corrupt ({e})") from e
