"""What every data set of this package yields and exposes, and how its items are batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from patchdino.data.datasets.bad_images import BadImageLog

CanvasItem = tuple[Tensor, Tensor, int]
"""``(image, size, label)``: ``(C, Hc, Wc)`` uint8 image on its canvas, ``(2,)`` long
``[h, w]`` of the valid (top-left) region, and the class index (-1 when unlabelled)."""


class CanvasBatch(NamedTuple):
    """Canvas items stacked into one batch.

    Attributes:
        images: ``(B, C, Hc, Wc)`` uint8 canvas images.
        sizes: ``(B, 2)`` long, valid ``[height, width]`` of each image on its canvas.
        labels: ``(B,)`` long, -1 where unknown.
    """

    images: Tensor
    sizes: Tensor
    labels: Tensor


class CanvasDataset(Dataset[CanvasItem]):
    """Base of the data sets: items are images resized and padded onto a square canvas.

    Each image is resized so that its longer side equals ``canvas`` (aspect kept) and
    padded with zeros at the bottom and right to ``(canvas, canvas)``; with ``canvas=None``
    images keep their native size (batching then needs all images to share a size).

    Attributes:
        canvas: side of the square canvas, or None for native sizes.
        channels: channels of every image (1 or 3).
        classes: class names indexed by label, or None when unlabelled.
        labels: ``(N,)`` long tensor of the label of every item (-1 when unlabelled).
        bad_images: unreadable files found so far (always empty for in-memory data sets).

    :meth:`item_names` names each item (a file path or an index in the split).
    """

    canvas: int | None
    channels: int
    classes: list[str] | None
    labels: Tensor
    bad_images: BadImageLog

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None when the data set is unlabelled."""
        return None if self.classes is None else len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> CanvasItem:
        raise NotImplementedError

    def item_names(self) -> list[str]:
        """Name of every item, in order, to join results back to images.

        Image files are named by their path relative to the split folder (``"a/img1.jpg"``);
        this base names items by their index in the split (``"4821"``).
        """
        return [str(i) for i in range(len(self))]


def collate_canvas(items: Sequence[CanvasItem]) -> CanvasBatch:
    """Stack ``(image, size, label)`` items (the ``collate_fn`` of data loaders).

    Args:
        items: B items with ``(C, Hc, Wc)`` uint8 images of one shape, ``(2,)`` sizes and
            int labels.

    Returns:
        ``(B, C, Hc, Wc)`` uint8 images, ``(B, 2)`` long sizes ``[h, w]`` and ``(B,)`` long
        labels.

    Raises:
        ValueError: no items, or images of different shapes (no canvas was set).
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
    labels = torch.tensor([int(label) for _, _, label in items], dtype=torch.long)
    return CanvasBatch(images, sizes, labels)
