"""Stack canvas items into a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from patchdino.data.datasets.base import CanvasItem


def collate_canvas(items: Sequence[CanvasItem]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``(image, size, label)`` items.

    Args:
        items: B items with ``(C, Hc, Wc)`` uint8 images of one shape, ``(2,)`` sizes and
            int labels.

    Returns:
        ``(B, C, Hc, Wc)`` uint8 images, ``(B, 2)`` long sizes ``[h, w]`` and ``(B,)`` long
        labels.
    """
    if not items:
        raise ValueError("cannot collate an empty list of items")
    shapes = {tuple(image.shape) for image, _, _ in items}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different shapes in one batch: {sorted(shapes)[:4]}; set a canvas "
            "size so that every image is resized and padded to the same square"
        )
    images = torch.stack([image for image, _, _ in items])
    sizes = torch.stack([size for _, size, _ in items])
    labels = torch.tensor([label for _, _, label in items], dtype=torch.long)
    return images, sizes, labels
