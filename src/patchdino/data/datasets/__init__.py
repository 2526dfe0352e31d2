"""Data sets decoded and resized onto a fixed square canvas; augmentation happens later."""

from patchdino.data.datasets.bad_images import BadImageError, BadImageLog
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.canvas import canvas_size, pad_to_canvas, resize_to_canvas
from patchdino.data.datasets.cifar import CIFARDataset
from patchdino.data.datasets.collate import collate_canvas
from patchdino.data.datasets.detect import DATASET_KINDS, detect_kind
from patchdino.data.datasets.factory import DEFAULT_CANVAS, build_dataset
from patchdino.data.datasets.fetch import DEFAULT_FASHION_MNIST_DIR, ensure_fashion_mnist
from patchdino.data.datasets.file_dataset import ImageFileDataset
from patchdino.data.datasets.files import IMG_EXTENSIONS
from patchdino.data.datasets.idx import IdxDataset, read_idx
from patchdino.data.datasets.imagefolder import FlatFolderDataset, ImageFolderDataset
from patchdino.data.datasets.safe_pickle import UnsafePickleError, load_restricted_pickle
from patchdino.data.datasets.tensor_dataset import InMemoryDataset

__all__ = [
    "DATASET_KINDS",
    "DEFAULT_CANVAS",
    "DEFAULT_FASHION_MNIST_DIR",
    "IMG_EXTENSIONS",
    "BadImageError",
    "BadImageLog",
    "CIFARDataset",
    "CanvasDataset",
    "CanvasItem",
    "FlatFolderDataset",
    "IdxDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "InMemoryDataset",
    "UnsafePickleError",
    "build_dataset",
    "canvas_size",
    "collate_canvas",
    "detect_kind",
    "ensure_fashion_mnist",
    "load_restricted_pickle",
    "pad_to_canvas",
    "read_idx",
    "resize_to_canvas",
]
