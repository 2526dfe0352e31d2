"""Build a data set from a path and a kind name."""

from __future__ import annotations

from pathlib import Path

from patchdino.data.datasets.bad_images import check_policy
from patchdino.data.datasets.base import CanvasDataset
from patchdino.data.datasets.cifar import CIFARDataset
from patchdino.data.datasets.detect import DATASET_KINDS, detect_kind
from patchdino.data.datasets.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, IdxDataset
from patchdino.data.datasets.imagefolder import FlatFolderDataset, ImageFolderDataset

DEFAULT_CANVAS = 256


def build_dataset(
    path: str | Path,
    kind: str = "auto",
    split: str = "train",
    canvas: int | None = DEFAULT_CANVAS,
    channels: int | None = None,
    on_bad_image: str = "skip",
) -> CanvasDataset:
    """Open the data set at ``path``; items are ``(image, size, label)`` on a square canvas.

    Args:
        path: data set folder (see :func:`detect_kind` for the layouts).
        kind: one of :data:`DATASET_KINDS`, or "auto" to detect it from the contents.
        split: "train", "val" or "test".
        canvas: side of the square canvas the longer image side is resized to, or None to
            keep native sizes (for data sets whose images all share one size).
        channels: 1 or 3, or None for the native count (1 for MNIST-like, 3 otherwise).
        on_bad_image: "skip" or "fail" for unreadable files of file-based kinds.

    Returns:
        The data set; ``classes``/``num_classes`` are None for unlabelled kinds.
    """
    check_policy(on_bad_image)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    if kind == "auto":
        kind = detect_kind(path)
    if kind == "imagefolder":
        return ImageFolderDataset(path, split, canvas, channels, on_bad_image)
    if kind == "flat":
        return FlatFolderDataset(path, split, canvas, channels, on_bad_image)
    if kind in ("cifar10", "cifar100"):
        return CIFARDataset(path, int(kind[5:]), split, canvas, channels)
    if kind in ("fashion_mnist", "mnist"):
        classes = FASHION_MNIST_CLASSES if kind == "fashion_mnist" else MNIST_CLASSES
        return IdxDataset(path, split, canvas, channels, classes)
    raise ValueError(f"unknown data set kind {kind!r}; expected 'auto' or one of {DATASET_KINDS}")
