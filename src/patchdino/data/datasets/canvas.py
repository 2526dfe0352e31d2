"""The fixed canvas every item is placed on: resize the longer side, pad bottom/right."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF


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
