"""CIFAR-10 / CIFAR-100 in the python pickle format (the layout torchvision downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchdino.data.datasets.safe_pickle import load_restricted_pickle
from patchdino.data.datasets.tensor_dataset import InMemoryDataset

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
