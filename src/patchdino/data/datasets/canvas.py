"""The fixed canvas every item is placed on, and decoding image files onto it.

The longer side of an image is resized to the canvas (aspect kept) and the rest padded with
zeros at the bottom and right. Image files are decoded with PIL straight to that size.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from patchdino.data.datasets.bad_images import BadImageError


def canvas_size(height: int, width: int, canvas: int | None) -> tuple[int, int]:
    """Size ``(h, w)`` of an image once its longer side equals ``canvas``, aspect kept.

    Args:
        height: source height in pixels.
        width: source width in pixels.
        canvas: target length of the longer side, or None to keep the native size.

    Returns:
        ``(h, w)`` with ``max(h, w) == canvas`` and both at least 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if canvas is None:
        return height, width
    if canvas < 1:
        raise ValueError(f"canvas must be a positive number of pixels, got {canvas}")
    scale = canvas / max(height, width)
    if height >= width:
        return canvas, max(1, round(width * scale))
    return max(1, round(height * scale)), canvas


def pad_to_canvas(image: Tensor, canvas: int | None) -> tuple[Tensor, Tensor]:
    """Pad an image with zeros at the bottom and right to ``(canvas, canvas)``.

    Args:
        image: ``(C, h, w)`` tensor with ``h, w <= canvas``.
        canvas: side of the square canvas, or None to return the image unpadded.

    Returns:
        ``(C, canvas, canvas)`` tensor (``(C, h, w)`` when ``canvas`` is None) and the
        ``(2,)`` long tensor ``[h, w]`` of the valid region.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    size = torch.tensor([h, w], dtype=torch.long)
    if canvas is None or (h == canvas and w == canvas):
        return image, size
    if h > canvas or w > canvas:
        raise ValueError(f"image of size {h}x{w} does not fit a canvas of {canvas}")
    return F.pad(image, (0, canvas - w, 0, canvas - h)), size


def resize_to_canvas(image: Tensor, canvas: int | None) -> tuple[Tensor, Tensor]:
    """Resize a uint8 image so that its longer side is ``canvas``, then pad it.

    Uses antialiased bilinear interpolation, the same filter as the decoders of the
    file-based data sets.

    Args:
        image: ``(C, H, W)`` uint8 tensor.
        canvas: side of the square canvas, or None to keep the native size.

    Returns:
        ``(C, canvas, canvas)`` uint8 tensor and the ``(2,)`` long tensor ``[h, w]``
        of its valid region.
    """
    h, w = canvas_size(int(image.shape[-2]), int(image.shape[-1]), canvas)
    if (h, w) != tuple(image.shape[-2:]):
        image = TF.resize(image, [h, w], antialias=True)
    return pad_to_canvas(image, canvas)


# What PIL raises on broken files: UnidentifiedImageError and "image file is truncated" are
# OSErrors; malformed headers surface as SyntaxError, ValueError, EOFError or struct.error.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)

RESAMPLE = Image.Resampling.BILINEAR


def _to_8bit(image: Image.Image) -> Image.Image:
    """Map 16-bit integer and float images to 8-bit grayscale; other modes pass through."""
    if image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        if array.max(initial=0) > 255:
            array = array / 257.0
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
    else:
        return image
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def fit_image(image: Image.Image, channels: int, canvas: int | None) -> Tensor:
    """A decoded PIL image as the image-file data sets give it, before padding.

    16-bit and float images are mapped to 8 bits, the image is converted to ``channels``
    (``"L"`` or ``"RGB"``) and resized (bilinear) so that its longer side is ``canvas``.
    :func:`decode_image` does the same from a file, except that it may first decode a large
    JPEG at a reduced scale that still covers the target size.

    Args:
        image: any PIL image.
        channels: 1 or 3.
        canvas: length of the longer side after resizing, or None to keep the native size.

    Returns:
        ``(channels, h, w)`` uint8 tensor with ``max(h, w) == canvas``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _fit(image, channels, canvas_size(image.height, image.width, canvas))


def _fit(image: Image.Image, channels: int, size: tuple[int, int]) -> Tensor:
    h, w = size
    converted = _to_8bit(image).convert("RGB" if channels == 3 else "L")
    if converted.size != (w, h):
        converted = converted.resize((w, h), RESAMPLE)
    array = np.asarray(converted, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (C, h, w)


def _decode(path: Path, channels: int, canvas: int | None) -> Tensor:
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as image:
        h, w = canvas_size(image.height, image.width, canvas)
        if canvas is not None:
            # JPEG only: decode at a reduced DCT scale that still covers the target size.
            image.draft(mode, (w, h))
        image.load()
        return _fit(image, channels, (h, w))


def decode_image(path: Path, channels: int, canvas: int | None) -> Tensor:
    """Read an image file, convert it to ``channels`` and fit its longer side to ``canvas``.

    Truncated files are refused: PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` must be False
    (its default); if other code has set it, this raises rather than accept partial data.

    Args:
        path: image file.
        channels: 3 for RGB (grayscale is replicated), 1 for luminance.
        canvas: length of the longer side after resizing, or None to keep the native size.

    Returns:
        ``(channels, h, w)`` uint8 tensor with ``max(h, w) == canvas``.

    Raises:
        BadImageError: the file is empty, truncated, or not an image PIL can decode.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would load "
            "silently with grey areas; set it back to False"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        if path.stat().st_size == 0:
            raise BadImageError(path, "the file is empty (0 bytes)")
        return _decode(path, channels, canvas)
    except BadImageError:
        raise
    except DECODE_ERRORS as error:
        raise BadImageError(path, f"{type(error).__name__}: {error}") from error
