"""Data sets held in memory as one uint8 tensor: MNIST-like IDX files and CIFAR pickles.

The whole split is read at once into a ``(N, C, H, W)`` uint8 tensor; items are resized onto
the canvas one at a time.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patchdino.data.datasets.bad_images import BadImageLog
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.canvas import resize_to_canvas
from patchdino.data.datasets.safe_pickle import load_restricted_pickle

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
        indices: ``(N,)`` long index of each image in the split it was taken from (a part
            of a split keeps the names of its items); None: ``0 .. N - 1``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: list[str] | None,
        canvas: int | None,
        channels: int | None = None,
        indices: Tensor | None = None,
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
        if indices is not None and indices.shape != labels.shape:
            raise ValueError(
                f"{labels.shape[0]} images but indices of shape {tuple(indices.shape)}"
            )
        self.indices = indices

    def item_names(self) -> list[str]:
        """Index of every image in its split, as text (``"4821"``)."""
        if self.indices is None:
            return super().item_names()
        return [str(int(i)) for i in self.indices]

    def __getitem__(self, index: int) -> CanvasItem:
        # clone: a view would drag the whole storage along when sent between processes
        image, size = resize_to_canvas(self.images[index].clone(), self.canvas)
        return image, size, int(self.labels[index])


# IDX type codes: numpy dtype of the big-endian payload.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIXES = {"train": "train", "val": "t10k", "test": "t10k"}

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
MNIST_CLASSES = [str(i) for i in range(10)]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its declared shape.

    The header is two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension.

    Raises:
        ValueError: naming the file, when the header or the payload size is wrong.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'}, "
            "expected 0000 followed by a type code and the number of dimensions"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path} ends inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX file {path} declares shape {shape} ({expected} bytes of data) but holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupt"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` files of a split in ``folder``, preferring raw over ``.gz``."""
    prefix = _PREFIXES[split]
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [folder / f"{prefix}-{kind}{ext}" for ext in ("", ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def find_idx_dir(root: Path) -> Path | None:
    """The folder holding IDX files: ``root``, ``root/raw`` or torchvision's ``*/raw``."""
    candidates = [root, root / "raw", root / "FashionMNIST" / "raw", root / "MNIST" / "raw"]
    return next((c for c in candidates if idx_files(c, "test") or idx_files(c, "train")), None)


class IdxDataset(InMemoryDataset):
    """MNIST or Fashion-MNIST, held in memory as ``(N, C, 28, 28)`` uint8.

    Args:
        root: folder with ``train-images-idx3-ubyte[.gz]``, ``t10k-...`` files (or its
            ``raw/`` parent as torchvision lays it out).
        split: "train", or "test" (also accepted as "val").
        canvas: side of the square canvas, or None to keep 28x28.
        channels: 1 (native) or 3.
        classes: class names; default Fashion-MNIST's.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        canvas: int | None = None,
        channels: int | None = None,
        classes: list[str] | None = None,
    ) -> None:
        if split not in _PREFIXES:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        folder = find_idx_dir(Path(root))
        files = None if folder is None else idx_files(folder, split)
        if folder is None or files is None:
            raise ValueError(
                f"no {_PREFIXES[split]}-images-idx3-ubyte[.gz] and {_PREFIXES[split]}-labels-"
                f"idx1-ubyte[.gz] files found in {root} (or its raw/ sub-folder)"
            )
        self.root = folder
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{files[0]}: expected (N, H, W) uint8 images, got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{files[1]}: {labels.shape} labels for {images.shape[0]} images")
        classes = FASHION_MNIST_CLASSES if classes is None else classes
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise ValueError(f"{files[1]}: labels outside 0..{len(classes) - 1}")
        super().__init__(
            torch.from_numpy(images).unsqueeze(1),  # (N, 1, H, W)
            torch.from_numpy(labels.astype(np.int64)),  # (N,)
            list(classes),
            canvas,
            channels,
        )


DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package ``dataset-fashion-mnist`` puts the four IDX files."""
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"


def find_fashion_mnist(root: Path = DEFAULT_FASHION_MNIST_DIR) -> Path:
    """The folder under ``root`` holding Fashion-MNIST's train and test IDX files.

    Nothing is installed or downloaded here; the message of the error says how to get them.

    Raises:
        ValueError: ``root`` lacks the train or test images or labels (one line).
    """
    folder = find_idx_dir(root) if root.is_dir() else None
    if folder is None or idx_files(folder, "train") is None or idx_files(folder, "test") is None:
        raise ValueError(
            f"Fashion-MNIST is not in {root}: install Debian's {FASHION_MNIST_PACKAGE} "
            f"(make fashion-mnist, or apt-get install {FASHION_MNIST_PACKAGE}), or give the "
            "folder of its train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files"
        )
    return folder


CIFAR_FOLDERS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}
_SPLIT_FILES = {
    10: {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    100: {"train": ["train"], "test": ["test"]},
}
_META = {10: ("batches.meta", "label_names"), 100: ("meta", "fine_label_names")}
_LABEL_KEYS = {10: "labels", 100: "fine_labels"}


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _load_dict(path: Path) -> dict[str, Any]:
    """A pickled dict with its keys as str (Python 2 files may hold bytes keys)."""
    if not path.is_file():
        raise ValueError(f"CIFAR file {path} is missing")
    content = load_restricted_pickle(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, expected a dict")
    return {_text(k): v for k, v in content.items()}


def find_cifar_dir(root: Path, num_classes: int) -> Path:
    """The ``cifar-10-batches-py`` / ``cifar-100-python`` folder: ``root`` or inside it."""
    folder = CIFAR_FOLDERS[num_classes]
    for candidate in (root / folder, root):
        if (candidate / _SPLIT_FILES[num_classes]["test"][0]).is_file():
            return candidate
    raise ValueError(
        f"no CIFAR-{num_classes} files found at {root}: expected {root / folder} or a folder "
        f"holding {', '.join(_SPLIT_FILES[num_classes]['train'])} and "
        f"{_SPLIT_FILES[num_classes]['test'][0]}"
    )


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_dict(path)
    label_key = _LABEL_KEYS[num_classes]
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path} lacks the 'data' or {label_key!r} entry of a CIFAR batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be (N, 3072) uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels outside 0..{num_classes - 1}")
    # Each row holds 1024 red, then 1024 green, then 1024 blue values, row-major 32x32.
    return data.reshape(-1, 3, 32, 32), labels


def _class_names(folder: Path, num_classes: int) -> list[str]:
    name, key = _META[num_classes]
    if not (folder / name).is_file():
        return [str(i) for i in range(num_classes)]
    names = _load_dict(folder / name).get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise ValueError(f"{folder / name}: {key!r} must list {num_classes} class names")
    return [_text(n) for n in names]


class CIFARDataset(InMemoryDataset):
    """CIFAR-10 or CIFAR-100 (fine labels), held in memory as ``(N, C, 32, 32)`` uint8.

    Args:
        root: the ``cifar-10-batches-py`` / ``cifar-100-python`` folder or its parent.
        num_classes: 10 or 100.
        split: "train", or "test" (also accepted as "val").
        canvas: side of the square canvas, or None to keep 32x32.
        channels: 3 (native) or 1.
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int = 10,
        split: str = "train",
        canvas: int | None = None,
        channels: int | None = None,
    ) -> None:
        if num_classes not in CIFAR_FOLDERS:
            raise ValueError(f"CIFAR has 10 or 100 classes, got {num_classes}")
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.root = find_cifar_dir(Path(root), num_classes)
        names = _SPLIT_FILES[num_classes]["train" if split == "train" else "test"]
        batches = [_read_batch(self.root / name, num_classes) for name in names]
        images = torch.from_numpy(np.concatenate([b[0] for b in batches]))  # (N, 3, 32, 32)
        labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))  # (N,)
        classes = _class_names(self.root, num_classes)
        super().__init__(images, labels, classes, canvas, channels)
