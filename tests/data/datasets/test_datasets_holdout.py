"""The validation split held out of a training set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_datasets_in_memory import _mnist_folder

from patchdino.config import load_config
from patchdino.data.datasets import InMemoryDataset
from patchdino.data.datasets.bad_images import BadImageLog
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.holdout import SubsetDataset, holdout_indices, holdout_part
from patchdino.train.build import open_dataset


def _in_memory(n: int = 20) -> InMemoryDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return InMemoryDataset(images, torch.arange(n) % 3, ["a", "b", "c"], canvas=None)


class _Items(CanvasDataset):
    """A file-like data set: item i is an image filled with i."""

    def __init__(self, n: int) -> None:
        self.labels = torch.arange(n) % 2
        self.classes = ["x", "y"]
        self.canvas = 4
        self.channels = 1
        self.bad_images = BadImageLog([])

    def __getitem__(self, index: int) -> CanvasItem:
        return torch.full((1, 4, 4), index, dtype=torch.uint8), torch.tensor([4, 4]), index % 2


def test_split_is_disjoint_complete_and_fixed() -> None:
    kept, held = holdout_indices(50, 12)
    assert held.numel() == 12 and kept.numel() == 38
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(50))
    assert torch.equal(kept, kept.sort().values) and torch.equal(held, held.sort().values)
    again = holdout_indices(50, 12)
    assert torch.equal(again[0], kept) and torch.equal(again[1], held)
    assert not torch.equal(held, torch.arange(12))  # a random subset, not the first images
    for bad in (0, 50, 51):
        with pytest.raises(ValueError, match=r"data\.holdout must be between 1 and 49"):
            holdout_indices(50, bad)


def test_in_memory_parts_stay_in_memory_with_their_labels() -> None:
    data = _in_memory()
    train, val = holdout_part(data, 5, "train"), holdout_part(data, 5, "val")
    assert isinstance(train, InMemoryDataset) and isinstance(val, InMemoryDataset)
    kept, held = holdout_indices(20, 5)
    assert train.images[:, 0, 0, 0].tolist() == kept.tolist()
    assert val.labels.tolist() == (held % 3).tolist() and val.classes == data.classes
    with pytest.raises(ValueError, match="part"):
        holdout_part(data, 5, "test")


def test_other_data_sets_are_wrapped_item_for_item() -> None:
    val = holdout_part(_Items(10), 3, "val")
    _, held = holdout_indices(10, 3)
    assert isinstance(val, SubsetDataset) and len(val) == 3
    assert [int(val[i][0][0, 0, 0]) for i in range(3)] == held.tolist()
    assert val.labels.tolist() == (held % 2).tolist() and val.canvas == 4


def test_pretraining_never_sees_the_held_out_images(tmp_path: Path) -> None:
    _mnist_folder(tmp_path, gz=False)  # 5 training and 3 test images
    options = [f"data.path={tmp_path}", "data.kind=fashion_mnist"]
    full = open_dataset(load_config(None, options))
    config = load_config(None, [*options, "data.holdout=2"])
    train = open_dataset(config)
    kept, _ = holdout_indices(5, 2)
    assert len(train) == 3 and len(open_dataset(config, "test")) == 3  # the test split is whole
    for i in range(3):
        assert torch.equal(train[i][0], full[int(kept[i])][0])
    with pytest.raises(ValueError, match=r"data\.holdout must be >= 0"):
        load_config(None, ["data.holdout=-1"])


def test_parts_keep_the_names_of_their_items() -> None:
    data = _in_memory()
    assert data.item_names() == [str(i) for i in range(20)]
    kept, held = holdout_indices(20, 5)
    assert holdout_part(data, 5, "val").item_names() == [str(i) for i in held.tolist()]
    train = holdout_part(data, 5, "train")
    assert train.item_names() == [str(i) for i in kept.tolist()]
    # a part of a part still names the items of the first data set
    kept_again, _ = holdout_indices(15, 3)
    assert holdout_part(train, 3, "train").item_names() == [
        str(i) for i in kept[kept_again].tolist()
    ]
    files = _Items(10)
    _, held = holdout_indices(10, 4)
    assert holdout_part(files, 4, "val").item_names() == [str(i) for i in held.tolist()]
