"""The deterministic evaluation transform, loaders, subsets and label alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from patchdino.data.datasets import InMemoryDataset
from patchdino.eval.common.eval_data import (
    EvalCollate,
    EvalDataError,
    Normalise,
    align_labels,
    eval_loader,
    eval_mode,
    eval_resize,
    open_split,
    resize_shorter_side,
    subset_indices,
)


def _smooth(channels: int, height: int, width: int) -> torch.Tensor:
    """A smooth uint8 image (so resampling filters of different libraries agree closely)."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    planes = [(40 + 150 * (y * (c + 1) / channels) * x + 30 * y) for c in range(channels)]
    return torch.stack(planes).round().to(torch.uint8)


@pytest.mark.parametrize("height,width", [(40, 20), (20, 40), (33, 33), (12, 30)])
def test_centre_crop_matches_torchvision(height: int, width: int) -> None:
    image = _smooth(3, height, width)
    canvas = torch.zeros(3, 48, 48, dtype=torch.uint8)
    canvas[:, :height, :width] = image
    out = eval_resize(canvas, torch.tensor([height, width]), 16, "center_crop")
    reference = v2.Compose(
        [
            v2.Resize(18, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(16),
        ]
    )(image)
    assert out.shape == reference.shape == (3, 16, 16) and out.dtype == torch.uint8
    assert (out.int() - reference.int()).abs().max() <= 2


def test_centre_crop_geometry_with_a_marker() -> None:
    """A 40 x 20 region becomes 36 x 18 (shorter side 18), then rows 10..26, columns 1..17."""
    assert resize_shorter_side(40, 20, 18) == (36, 18)
    image = torch.zeros(1, 40, 20, dtype=torch.uint8)
    image[:, 20:24, 10:12] = 255  # a block just below the centre
    out = eval_resize(image, torch.tensor([40, 20]), 16, "center_crop")[0].float()
    rows, cols = torch.nonzero(out > 100, as_tuple=True)
    # Source rows 20-24 map to resized rows 18-21.6, i.e. crop rows 8-11.6.
    assert 8 <= rows.min() and rows.max() <= 12
    # Source columns 10-12 map to 9-10.8, i.e. crop columns 8-9.8.
    assert 7 <= cols.min() and cols.max() <= 10


def test_resize_mode_and_native_size() -> None:
    canvas = _smooth(1, 20, 20)
    assert torch.equal(eval_resize(canvas, torch.tensor([20, 20]), None, "resize"), canvas)
    assert torch.equal(eval_resize(canvas, torch.tensor([20, 20]), 20, "resize"), canvas)
    out = eval_resize(canvas, torch.tensor([20, 12]), 8, "resize")
    reference = v2.functional.resize(
        canvas[:, :20, :12], [8, 8], v2.InterpolationMode.BICUBIC, antialias=True
    )
    assert (out.int() - reference.int()).abs().max() <= 2


def test_collate_batched_path_equals_per_item_path() -> None:
    images = torch.stack([_smooth(3, 12, 12), _smooth(3, 12, 12).flip(-1)])
    items = [(img, torch.tensor([12, 12]), i) for i, img in enumerate(images)]
    batch, labels = EvalCollate(16, "resize")(items)
    assert batch.shape == (2, 3, 16, 16) and labels.tolist() == [0, 1]
    for i, (img, size, _) in enumerate(items):
        assert torch.equal(batch[i], eval_resize(img, size, 16, "resize"))


def test_normalise() -> None:
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = Normalise(mean, std)(images)
    for c in range(3):
        expected = (images[:, c].float() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(out[:, c], expected)
    with pytest.raises(ValueError, match="channels"):
        Normalise((0.5,), (0.5,))(images)


def test_loader_order_subset_and_kind() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4)
    dataset = InMemoryDataset(images.contiguous(), torch.arange(10) % 3, ["a", "b", "c"], None)
    indices = subset_indices(10, 4, seed=3)
    assert indices is not None and indices.tolist() == sorted(indices.tolist())
    assert torch.equal(indices, subset_indices(10, 4, seed=3))
    assert subset_indices(10, 10) is None and subset_indices(10, None) is None
    batches = list(eval_loader(dataset, "cifar10", None, 3, indices=indices))
    seen = torch.cat([b[0][:, 0, 0, 0] for b in batches])
    assert seen.tolist() == indices.tolist()
    assert torch.cat([b[1] for b in batches]).tolist() == (indices % 3).tolist()
    assert eval_mode("cifar10") == "resize" and eval_mode("imagefolder") == "center_crop"


def test_align_labels() -> None:
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(align_labels(["a", "b"], ["a", "b"], labels), labels)
    assert align_labels(["a", "b", "c"], ["a", "c"], labels).tolist() == [0, 2, 2]
    with pytest.raises(EvalDataError, match="1 classes that the train split lacks \\(d\\)"):
        align_labels(["a", "b"], ["a", "d"], labels)
    with pytest.raises(EvalDataError, match="no labels"):
        align_labels(None, None, labels)


def test_missing_split_is_one_line(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / name / "x.png")
    train = open_split(str(tmp_path / "train"), "train", "imagefolder", 3, 16)
    assert len(train) == 2 and train.canvas is not None and train.canvas >= 320
    with pytest.raises(EvalDataError) as info:
        open_split(str(tmp_path / "train"), "test", "imagefolder", 3, 16)
    assert len(str(info.value).splitlines()) == 1 and "test split" in str(info.value)
