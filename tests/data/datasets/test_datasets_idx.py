"""IDX files (MNIST, Fashion-MNIST): header parsing, exact pixels, errors, the real data."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from patchdino.data.datasets import DEFAULT_FASHION_MNIST_DIR, IdxDataset, read_idx

FASHION_FILES = [
    f"{p}-{k}.gz" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
]


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return header + dims + array.astype(">u1" if type_code == 0x08 else ">i2").tobytes()


def _write(path: Path, payload: bytes) -> None:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _mnist_folder(root: Path, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    data = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 6, 4), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte{ext}", _idx_bytes(images))
        _write(root / f"{prefix}-labels-idx1-ubyte{ext}", _idx_bytes(labels))
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_exact_pixels_and_labels(tmp_path: Path, gz: bool) -> None:
    data = _mnist_folder(tmp_path, gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = IdxDataset(tmp_path, split, canvas=None)
        images, labels = data[prefix]
        assert len(ds) == len(labels) and ds.num_classes == 10
        assert ds.images.shape == (len(labels), 1, 6, 4) and ds.images.dtype == torch.uint8
        for n in range(len(labels)):
            image, size, label = ds[n]
            assert image.shape == (1, 6, 4) and size.tolist() == [6, 4]
            assert label == int(labels[n])
            for y in range(6):
                for x in range(4):
                    assert int(image[0, y, x]) == int(images[n, y, x])


def test_idx_canvas_and_rgb(tmp_path: Path) -> None:
    data = _mnist_folder(tmp_path, gz=True)
    ds = IdxDataset(tmp_path, "train", canvas=12, channels=3)
    image, size, _ = ds[0]
    assert image.shape == (3, 12, 12) and size.tolist() == [12, 8]
    assert image[:, :, 8:].eq(0).all()
    assert torch.equal(ds.images[1, 2], torch.from_numpy(data["train"][0][1]))


def test_idx_header_of_other_types(tmp_path: Path) -> None:
    array = np.array([[-3, 300], [7, -1000]], dtype=np.int16)
    _write(tmp_path / "x.idx", _idx_bytes(array, type_code=0x0B))
    assert np.array_equal(read_idx(tmp_path / "x.idx"), array)


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(ValueError, match=f"{path}.*bad magic"):
        read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)


def test_idx_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    payload = _idx_bytes(np.zeros((3, 5, 5), dtype=np.uint8))
    _write(path, payload[:-7])
    with pytest.raises(ValueError, match=f"{path}.*truncated"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=str(path)):
        read_idx(path)


def test_idx_count_mismatch_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="idx3-ubyte"):
        IdxDataset(tmp_path)
    _mnist_folder(tmp_path, gz=False)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(2, dtype=np.uint8)))
    with pytest.raises(ValueError, match="labels for 3 images"):
        IdxDataset(tmp_path, "test")


def test_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _mnist_folder(raw, gz=False)
    assert len(IdxDataset(tmp_path, "test")) == 3


@pytest.mark.skipif(
    not all((DEFAULT_FASHION_MNIST_DIR / f).is_file() for f in FASHION_FILES),
    reason="Fashion-MNIST is not installed",
)
def test_real_fashion_mnist_test_split() -> None:
    ds = IdxDataset(DEFAULT_FASHION_MNIST_DIR, "test", canvas=None)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.classes is not None and ds.classes[9] == "Ankle boot"
    image, size, label = ds[0]
    assert image.shape == (1, 28, 28) and size.tolist() == [28, 28] and 0 <= label <= 9
