"""Raw-pixel baselines on the real Fashion-MNIST (slow; skipped when the files are absent)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from patchdino.eval import knn_classify, pixel_features, pixel_statistics, train_linear_probe

ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((ROOT / name).is_file() for name in FILES.values()),
        reason=f"Fashion-MNIST IDX files not found in {ROOT}",
    ),
]


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzip) as a tensor: uint8 images (N, 1, H, W) or int64 labels (N,)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    if ndim == 1:
        return torch.from_numpy(values.astype(np.int64))
    return torch.from_numpy(values.copy()).unsqueeze(1)


def load() -> dict[str, torch.Tensor]:
    data = {key: read_idx(ROOT / name) for key, name in FILES.items()}
    assert data["train_images"].shape == (60000, 1, 28, 28)
    assert data["test_images"].shape == (10000, 1, 28, 28)
    return data


def test_pixel_knn_reproduces_reference() -> None:
    data = load()
    mean, std = pixel_statistics(data["train_images"])  # mean image, per-channel std
    train = pixel_features(data["train_images"], mean, std)
    test = pixel_features(data["test_images"], mean, std)
    result = knn_classify(
        train, data["train_labels"], test, data["test_labels"], ks=(20,), temperature=0.07
    )
    print(f"Fashion-MNIST centred-pixel cosine k-NN, k=20, T=0.07: {result.top1[20]:.2f}%")
    assert result.top1[20] == pytest.approx(86.1, abs=0.3)


def test_pixel_linear_probe() -> None:
    data = load()
    train = data["train_images"].flatten(1).float() / 255.0
    test = data["test_images"].flatten(1).float() / 255.0
    result = train_linear_probe(
        train, data["train_labels"], test, data["test_labels"], 10, epochs=30, lr=0.01,
        progress=False,
    )  # fmt: skip
    print(f"Fashion-MNIST pixel linear probe, 30 epochs: {result.top1:.2f}%")
    assert 83.0 < result.top1 < 87.0  # multinomial logistic regression on pixels: about 84%
