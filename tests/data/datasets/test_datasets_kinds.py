"""The registry of data set kinds: its records, detect_kind on each layout, build_dataset."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchdino.data.datasets import (
    DATASET_KINDS,
    FILE_KINDS,
    KINDS,
    build_dataset,
    canvas_for,
    default_root,
    detect_kind,
    get_kind,
    statistics,
)


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), 9, dtype=np.uint8)).save(path)


def _cifar(root: Path, folder: str, files: list[str], label_key: bytes) -> None:
    (root / folder).mkdir(parents=True)
    for name in files:
        batch = {b"data": np.zeros((2, 3072), np.uint8), label_key: [1, 2]}
        (root / folder / name).write_bytes(pickle.dumps(batch))


def _idx(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        images = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 3, 3) + bytes(18)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes(2)
        )


def test_cifar_layouts(tmp_path: Path) -> None:
    files10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    _cifar(tmp_path / "c10", "cifar-10-batches-py", files10, b"labels")
    _cifar(tmp_path / "c100", "cifar-100-python", ["train", "test"], b"fine_labels")
    assert detect_kind(tmp_path / "c10") == "cifar10"
    assert detect_kind(tmp_path / "c10" / "cifar-10-batches-py") == "cifar10"
    assert detect_kind(tmp_path / "c100") == "cifar100"
    assert detect_kind(tmp_path / "c100" / "cifar-100-python") == "cifar100"
    assert len(build_dataset(tmp_path / "c10", canvas=None)) == 10
    assert build_dataset(tmp_path / "c100", split="test", canvas=None).num_classes == 100


@pytest.mark.parametrize(
    ("folder", "kind"),
    [("fashion-mnist", "fashion_mnist"), ("mnist", "mnist"), ("MNIST/raw", "mnist"),
     ("FashionMNIST/raw", "fashion_mnist"), ("digits", "fashion_mnist")],
)  # fmt: skip
def test_idx_layouts(tmp_path: Path, folder: str, kind: str) -> None:
    _idx(tmp_path / folder)
    assert detect_kind(tmp_path / folder) == kind
    ds = build_dataset(tmp_path / folder, canvas=None)
    assert len(ds) == 2 and ds.channels == 1


def test_torchvision_root_of_idx(tmp_path: Path) -> None:
    _idx(tmp_path / "FashionMNIST" / "raw")
    assert detect_kind(tmp_path) == "fashion_mnist"


def test_image_layouts(tmp_path: Path) -> None:
    _png(tmp_path / "split" / "train" / "a" / "1.png")
    _png(tmp_path / "split" / "val" / "a" / "2.png")
    _png(tmp_path / "classes" / "a" / "deep" / "1.png")
    _png(tmp_path / "classes" / "b" / "2.png")
    _png(tmp_path / "flat" / "1.png")
    (tmp_path / "flat" / "empty_dir").mkdir()
    assert detect_kind(tmp_path / "split") == "imagefolder"
    assert detect_kind(tmp_path / "classes") == "imagefolder"
    assert detect_kind(tmp_path / "flat") == "flat"
    assert build_dataset(tmp_path / "split", split="val", canvas=8).classes == ["a"]
    assert build_dataset(tmp_path / "classes", canvas=8).labels.tolist() == [0, 1]
    flat = build_dataset(tmp_path / "flat", canvas=8)
    assert flat.num_classes is None and flat[0][2] == -1
    assert len(build_dataset(tmp_path / "classes", kind="flat", canvas=8)) == 2


def test_unknown_layout_explains(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError) as error:
        detect_kind(tmp_path)
    message = str(error.value)
    assert "notes.txt" in message and "sub/" in message
    assert all(kind in message for kind in DATASET_KINDS)


def test_empty_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="it is empty"):
        detect_kind(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        build_dataset(tmp_path / "missing")


def test_build_dataset_argument_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png")
    with pytest.raises(ValueError, match="unknown data set kind"):
        build_dataset(tmp_path, kind="imagenet")
    with pytest.raises(ValueError, match="channels"):
        build_dataset(tmp_path, channels=2)
    with pytest.raises(ValueError, match="on_bad_image"):
        build_dataset(tmp_path, on_bad_image="ignore")
    with pytest.raises(ValueError, match="test"):
        build_dataset(tmp_path, split="test")


def test_every_kind_has_one_consistent_record() -> None:
    assert DATASET_KINDS == tuple(KINDS) and set(FILE_KINDS) == {"imagefolder", "flat"}
    for name, kind in KINDS.items():
        assert kind.name == name and kind.channels in (1, 3)
        assert len(kind.mean) == len(kind.std) == kind.channels
        assert kind.in_memory == (kind.canvas is None)
    assert get_kind("mnist").channels == 1 and get_kind("cifar100").channels == 3
    with pytest.raises(ValueError, match="unknown data set kind 'imagenet'"):
        get_kind("imagenet")


def test_statistics_canvas_and_default_folder() -> None:
    assert statistics("fashion_mnist") == ((0.2860,), (0.3530,))
    assert statistics("imagenet") == statistics("flat") == statistics("imagefolder")
    assert canvas_for("imagefolder", None) == 320 and canvas_for("flat", 64) == 64
    assert canvas_for("cifar10", None) is None
    assert default_root("auto") == default_root("fashion_mnist") is not None
    assert default_root("cifar10") is None
