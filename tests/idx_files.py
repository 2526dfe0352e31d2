"""Writers of small IDX data sets (the MNIST / Fashion-MNIST file format) for tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an unsigned-byte array of any rank."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()


def write_idx_split(
    root: Path, split: str, images: np.ndarray, labels: np.ndarray, gzip: bool = False
) -> None:
    """``(N, H, W)`` uint8 images and ``(N,)`` labels as the IDX files of ``split``."""
    import gzip as gz

    prefix = "train" if split == "train" else "t10k"
    root.mkdir(parents=True, exist_ok=True)
    for name, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(np.asarray(array).astype(np.uint8))
        path = root / f"{prefix}-{name}-ubyte"
        if gzip:
            path.with_suffix(".gz").write_bytes(gz.compress(data))
        else:
            path.write_bytes(data)


def garment_images(labels: np.ndarray, side: int, seed: int) -> np.ndarray:
    """``(N, side, side)`` uint8 images: dark noise with a bright square whose size and
    brightness depend on the label, like a garment on a black background."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 20, (len(labels), side, side))
    for i, label in enumerate(labels):
        half = 2 + int(label) % max(1, side // 4)
        top = int(rng.integers(0, side - 2 * half + 1))
        left = int(rng.integers(0, side - 2 * half + 1))
        images[i, top : top + 2 * half, left : left + 2 * half] = 120 + 40 * (int(label) % 3)
    return images.astype(np.uint8)
