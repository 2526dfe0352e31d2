"""Data sets held in memory as one uint8 tensor (CIFAR, MNIST-like)."""

from __future__ import annotations

from torch import Tensor

from patchdino.data.datasets.bad_images import BadImageLog
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.canvas import resize_to_canvas

# ITU-R 601-2 luma weights, as PIL's convert("L").
_LUMA = (299, 587, 114)


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """Convert a uint8 batch to 1 or 3 channels.

    Args:
        images: ``(N, C, H, W)`` uint8 tensor with C in (1, 3).
        channels: 1 (luminance) or 3 (grayscale replicated).

    Returns:
        ``(N, channels, H, W)`` uint8 tensor (the input itself when nothing changes).
    """
    c = int(images.shape[1])
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    r, g, b = images.long().unbind(1)  # each (N, H, W)
    luma = (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 500) // 1000
    return luma.to(images.dtype).unsqueeze(1)


class InMemoryDataset(CanvasDataset):
    """Images in one ``(N, C, H, W)`` uint8 tensor, resized onto the canvas per item.

    The whole tensor is available as ``images`` (native resolution, requested channels)
    for pipelines that augment on the GPU.

    Args:
        images: ``(N, C, H, W)`` uint8 tensor, C in (1, 3).
        labels: ``(N,)`` long tensor of class indices.
        classes: class names indexed by label.
        canvas: side of the square canvas, or None to keep the native size.
        channels: 1 or 3, or None to keep the native channels.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: list[str] | None,
        canvas: int | None,
        channels: int | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = convert_channels(
            images, int(images.shape[1]) if channels is None else channels
        )
        self.labels = labels.long()
        self.classes = classes
        self.canvas = canvas
        self.channels = int(self.images.shape[1])
        self.bad_images = BadImageLog([])

    def __getitem__(self, index: int) -> CanvasItem:
        # clone: a view would drag the whole storage along when sent between processes
        image, size = resize_to_canvas(self.images[index].clone(), self.canvas)
        return image, size, int(self.labels[index])
