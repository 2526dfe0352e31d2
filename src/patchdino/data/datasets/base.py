"""What every data set of this package yields and exposes."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from patchdino.data.datasets.bad_images import BadImageLog

CanvasItem = tuple[Tensor, Tensor, int]
"""``(image, size, label)``: ``(C, Hc, Wc)`` uint8 image on its canvas, ``(2,)`` long
``[h, w]`` of the valid (top-left) region, and the class index (-1 when unlabelled)."""


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
