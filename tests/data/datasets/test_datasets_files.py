"""Image-folder and flat-folder data sets read with PIL."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchdino.data.datasets import FlatFolderDataset, ImageFolderDataset, build_dataset


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _class_tree(root: Path) -> dict[Path, np.ndarray]:
    """Two classes; 'cat' images nested one level deeper, mixed-case extensions."""
    arrays = {
        root / "dog" / "a.png": _rgb(10, 20, 0),
        root / "dog" / "b.PNG": _rgb(20, 10, 1),
        root / "cat" / "sub" / "c.png": _rgb(16, 16, 2),
    }
    for path, array in arrays.items():
        _save(path, array)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"")
    return arrays


def test_imagefolder_labels_shapes_and_pixels(tmp_path: Path) -> None:
    arrays = _class_tree(tmp_path)
    ds = ImageFolderDataset(tmp_path, canvas=20)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 3
    assert [p.name for p in ds.paths] == ["c.png", "a.png", "b.PNG"]
    assert ds.labels.tolist() == [0, 1, 1]
    for i, path in enumerate(ds.paths):
        image, size, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 20, 20)
        assert size.dtype == torch.long and label == int(ds.labels[i])
        h, w = size.tolist()
        if path.name != "c.png":  # native longer side 20: pixels unchanged, zeros around
            expected = torch.from_numpy(arrays[path]).permute(2, 0, 1)
            assert (h, w) == tuple(expected.shape[1:])
            assert torch.equal(image[:, :h, :w], expected)
        assert image[:, h:].eq(0).all() and image[:, :, w:].eq(0).all()


def test_canvas_resize_keeps_aspect(tmp_path: Path) -> None:
    _save(tmp_path / "x" / "wide.png", np.full((12, 30, 3), 77, dtype=np.uint8))
    _save(tmp_path / "x" / "tall.png", np.full((30, 12, 3), 77, dtype=np.uint8))
    ds = ImageFolderDataset(tmp_path, canvas=50)
    sizes = {p.name: ds[i][1].tolist() for i, p in enumerate(ds.paths)}
    assert sizes == {"wide.png": [20, 50], "tall.png": [50, 20]}
    image, size, _ = ds[0]
    h, w = size.tolist()
    assert image[:, :h, :w].eq(77).all() and image.sum() == 77 * 3 * h * w


def test_channels_conversion(tmp_path: Path) -> None:
    gray = np.random.default_rng(3).integers(0, 256, (8, 8), dtype=np.uint8)
    _save(tmp_path / "a" / "g.png", gray)
    rgb = ImageFolderDataset(tmp_path, canvas=8)[0][0]
    assert rgb.shape == (3, 8, 8)
    for c in range(3):
        assert torch.equal(rgb[c], torch.from_numpy(gray))
    color = _rgb(8, 8, 4)
    _save(tmp_path / "a" / "g.png", color)
    one = ImageFolderDataset(tmp_path, canvas=8, channels=1)[0][0]
    expected = np.array(Image.fromarray(color).convert("L"))
    assert one.shape == (1, 8, 8) and torch.equal(one[0], torch.from_numpy(expected))


def test_jpeg_with_reduced_decoding_has_exact_size(tmp_path: Path) -> None:
    Image.fromarray(_rgb(300, 200, 5)).save(tmp_path / "big.jpg", quality=90)
    image, size, label = FlatFolderDataset(tmp_path, canvas=37)[0]
    assert image.shape == (3, 37, 37) and size.tolist() == [37, 25] and label == -1


def test_native_size_without_canvas(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "x.png", _rgb(9, 13, 6))
    image, size, _ = ImageFolderDataset(tmp_path, canvas=None)[0]
    assert image.shape == (3, 9, 13) and size.tolist() == [9, 13]


def test_split_layout(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "a" / "1.png", _rgb(4, 4, 0))
    _save(tmp_path / "train" / "b" / "2.png", _rgb(4, 4, 1))
    _save(tmp_path / "val" / "a" / "3.png", _rgb(4, 4, 2))
    _save(tmp_path / "val" / "b" / "4.png", _rgb(4, 4, 3))
    _save(tmp_path / "val" / "b" / "5.png", _rgb(4, 4, 4))
    train = ImageFolderDataset(tmp_path, "train", canvas=4)
    val = ImageFolderDataset(tmp_path, "val", canvas=4)
    test = ImageFolderDataset(tmp_path, "test", canvas=4)  # falls back on val/
    assert len(train) == 2 and len(val) == 3 and len(test) == 3
    assert val.labels.tolist() == [0, 1, 1]


def test_root_without_splits_is_train_only(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", _rgb(4, 4, 0))
    assert len(ImageFolderDataset(tmp_path, "train", canvas=4)) == 1
    with pytest.raises(ValueError, match=r"no val/ or test/ sub-folder"):
        ImageFolderDataset(tmp_path, "val", canvas=4)
    with pytest.raises(ValueError, match="split must be"):
        ImageFolderDataset(tmp_path, "holdout", canvas=4)


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / f"{i}.png", _rgb(5, 6, i))
    ds = FlatFolderDataset(tmp_path, canvas=6)
    assert len(ds) == 3 and ds.classes is None and ds.num_classes is None
    assert [ds[i][2] for i in range(3)] == [-1, -1, -1]


@pytest.mark.parametrize("kind", ["imagefolder", "flat"])
def test_empty_folder_error_names_folder(tmp_path: Path, kind: str) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        build_dataset(tmp_path, kind=kind)


def test_class_folder_without_images_is_an_error(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", _rgb(4, 4, 0))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class"):
        ImageFolderDataset(tmp_path)


def test_images_without_class_folders_suggest_flat(tmp_path: Path) -> None:
    _save(tmp_path / "1.png", _rgb(4, 4, 0))
    with pytest.raises(ValueError, match="kind='flat'"):
        ImageFolderDataset(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")


def test_items_are_named_by_their_path_in_the_split(tmp_path: Path) -> None:
    _class_tree(tmp_path / "train")
    _save(tmp_path / "val" / "dog" / "d.png", _rgb(4, 4, 3))
    train = ImageFolderDataset(tmp_path, "train", canvas=8)
    assert train.item_names() == ["cat/sub/c.png", "dog/a.png", "dog/b.PNG"]
    assert [train.root / name for name in train.item_names()] == train.paths
    assert ImageFolderDataset(tmp_path, "val", canvas=8).item_names() == ["dog/d.png"]
    for i in range(2):
        _save(tmp_path / "flat" / f"{i}.png", _rgb(5, 6, i))
    assert FlatFolderDataset(tmp_path / "flat", canvas=6).item_names() == ["0.png", "1.png"]
