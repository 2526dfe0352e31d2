"""In-memory data sets: IDX files (MNIST, Fashion-MNIST: header parsing, exact pixels, errors,
the real data, its default folder) and CIFAR pickles (pixel layout, labels, class names,
refusal of unsafe pickles)."""

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from patchdino.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    CIFARDataset,
    IdxDataset,
    UnsafePickleError,
    find_fashion_mnist,
    load_restricted_pickle,
    read_idx,
)

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


def test_find_fashion_mnist_returns_the_folder_of_both_splits(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FASHION_FILES:
        (raw / name).write_bytes(b"")
    assert find_fashion_mnist(tmp_path) == raw


def test_find_fashion_mnist_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    for root in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match="make fashion-mnist") as error:
            find_fashion_mnist(root)
        assert "\n" not in str(error.value) and "dataset-fashion-mnist" in str(error.value)


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, content: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=protocol)


def _cifar10(root: Path, per_batch: int = 2) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _rows(per_batch, i), [(i + j) % 10 for j in range(per_batch)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": rows, b"labels": labels})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _rows(3, 9), [9, 0, 4]
    _dump(folder / "test_batch", {b"data": test_rows, b"labels": test_labels}, protocol=2)
    names = [f"class{i}".encode() for i in range(10)]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return np.concatenate(train_rows), train_labels, test_rows, test_labels


def _expected_pixel(row: np.ndarray, c: int, y: int, x: int) -> int:
    """Plain reading of the CIFAR row layout: 1024 R, then G, then B values, row-major."""
    return int(row[c * 1024 + y * 32 + x])


def test_cifar10_train_and_test(tmp_path: Path) -> None:
    train_rows, train_labels, test_rows, test_labels = _cifar10(tmp_path)
    train = CIFARDataset(tmp_path, 10, "train", canvas=None)
    assert len(train) == 10 and train.labels.tolist() == train_labels
    assert train.classes == [f"class{i}" for i in range(10)] and train.num_classes == 10
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    for n in (0, 7):
        image, size, label = train[n]
        assert image.shape == (3, 32, 32) and size.tolist() == [32, 32]
        assert label == train_labels[n]
        for c, y, x in [(0, 0, 0), (1, 0, 5), (2, 3, 1), (0, 31, 30), (2, 17, 9)]:
            assert int(image[c, y, x]) == _expected_pixel(train_rows[n], c, y, x)
    test = CIFARDataset(tmp_path / "cifar-10-batches-py", 10, "test", canvas=None)
    assert test.labels.tolist() == test_labels
    assert int(test[2][0][1, 30, 2]) == _expected_pixel(test_rows[2], 1, 30, 2)


def test_cifar_canvas_and_grayscale(tmp_path: Path) -> None:
    _cifar10(tmp_path)
    image, size, _ = CIFARDataset(tmp_path, 10, "test", canvas=64)[0]
    assert image.shape == (3, 64, 64) and size.tolist() == [64, 64]
    gray = CIFARDataset(tmp_path, 10, "test", canvas=None, channels=1)
    rgb = CIFARDataset(tmp_path, 10, "test", canvas=None).images.double()
    expected = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).round()
    assert gray.images.shape == (3, 1, 32, 32)
    assert (gray.images[:, 0].double() - expected).abs().max() <= 1


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    rows = _rows(4, 0)
    batch = {b"data": rows, b"fine_labels": [99, 0, 5, 42], b"coarse_labels": [1, 2, 3, 4]}
    _dump(folder / "train", batch)
    _dump(folder / "test", {b"data": rows[:1], b"fine_labels": [3], b"coarse_labels": [0]})
    ds = CIFARDataset(tmp_path, 100, "train", canvas=None)
    assert ds.labels.tolist() == [99, 0, 5, 42] and ds.num_classes == 100
    assert int(ds[3][0][2, 1, 1]) == _expected_pixel(rows[3], 2, 1, 1)


def test_cifar_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no CIFAR-10 files"):
        CIFARDataset(tmp_path, 10)
    _dump(tmp_path / "test_batch", {b"data": _rows(2, 0), b"labels": [1, 12]})
    with pytest.raises(ValueError, match="labels outside"):
        CIFARDataset(tmp_path, 10, "test")
    _dump(tmp_path / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]})
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        CIFARDataset(tmp_path, 10, "test")
    with pytest.raises(ValueError, match="data_batch_1 is missing"):
        CIFARDataset(tmp_path, 10, "train")


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


class _OpenCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_SystemCall, _OpenCall])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    _dump(folder / "test_batch", {b"data": _rows(1, 0), b"labels": [payload(marker)]})
    with pytest.raises(UnsafePickleError, match="test_batch") as error:
        CIFARDataset(tmp_path, 10, "test")
    assert "system" in str(error.value) or "open" in str(error.value)
    assert not marker.exists()


def test_unknown_numpy_function_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    # A global outside the allow-list, written by hand: numpy.load on a chosen path.
    path.write_bytes(b"cnumpy\nload\n(S'/etc/passwd'\ntR.")
    with pytest.raises(UnsafePickleError, match=r"numpy\.load"):
        load_restricted_pickle(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_loader_reads_arrays(tmp_path: Path, protocol: int) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    _dump(tmp_path / "p", {b"data": array, "labels": [1, 2, 3], b"n": np.int64(5)}, protocol)
    content = load_restricted_pickle(tmp_path / "p")
    assert np.array_equal(content[b"data"], array) and content["labels"] == [1, 2, 3]
    assert content[b"n"] == 5


def test_not_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(ValueError, match="not a valid pickle"):
        load_restricted_pickle(tmp_path / "junk")
