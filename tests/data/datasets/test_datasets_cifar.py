"""CIFAR pickles: pixel layout, labels, class names and refusal of unsafe pickles."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from patchdino.data.datasets import CIFARDataset, UnsafePickleError, load_restricted_pickle


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
