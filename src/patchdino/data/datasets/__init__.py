"""Data sets decoded and resized onto a fixed square canvas; augmentation happens later.

Modules: :mod:`~.kinds` (the registry of data set kinds, detection, :func:`build_dataset`),
:mod:`~.base` (items, batches, the base class), :mod:`~.files` (image files),
:mod:`~.in_memory` (IDX and CIFAR), :mod:`~.canvas` (decoding onto the canvas),
:mod:`~.bad_images`, :mod:`~.safe_pickle` and :mod:`~.holdout`.
"""

from patchdino.data.datasets.bad_images import BAD_IMAGE_POLICIES, BadImageError, BadImageLog
from patchdino.data.datasets.base import CanvasBatch, CanvasDataset, CanvasItem, collate_canvas
from patchdino.data.datasets.canvas import canvas_size, pad_to_canvas, resize_to_canvas
from patchdino.data.datasets.files import (
    IMG_EXTENSIONS,
    FlatFolderDataset,
    ImageFileDataset,
    ImageFolderDataset,
)
from patchdino.data.datasets.in_memory import (
    DEFAULT_FASHION_MNIST_DIR,
    CIFARDataset,
    IdxDataset,
    InMemoryDataset,
    find_fashion_mnist,
    read_idx,
)
from patchdino.data.datasets.kinds import (
    DATASET_KINDS,
    DEFAULT_CANVAS,
    FILE_KINDS,
    KINDS,
    DataKind,
    build_dataset,
    canvas_for,
    default_root,
    detect_kind,
    get_kind,
    normalisation,
    statistics,
)
from patchdino.data.datasets.safe_pickle import UnsafePickleError, load_restricted_pickle

__all__ = [
    "BAD_IMAGE_POLICIES",
    "DATASET_KINDS",
    "DEFAULT_CANVAS",
    "DEFAULT_FASHION_MNIST_DIR",
    "FILE_KINDS",
    "IMG_EXTENSIONS",
    "KINDS",
    "BadImageError",
    "BadImageLog",
    "CIFARDataset",
    "CanvasBatch",
    "CanvasDataset",
    "CanvasItem",
    "DataKind",
    "FlatFolderDataset",
    "IdxDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "InMemoryDataset",
    "UnsafePickleError",
    "build_dataset",
    "canvas_for",
    "canvas_size",
    "collate_canvas",
    "default_root",
    "detect_kind",
    "find_fashion_mnist",
    "get_kind",
    "load_restricted_pickle",
    "normalisation",
    "pad_to_canvas",
    "read_idx",
    "resize_to_canvas",
    "statistics",
]
