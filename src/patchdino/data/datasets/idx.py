"""MNIST-like data sets stored as IDX files (raw or gzip), e.g. Fashion-MNIST."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from patchdino.data.datasets.tensor_dataset import InMemoryDataset

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
