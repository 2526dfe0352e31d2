"""Batching canvas items."""

import pytest
import torch

from patchdino.data.datasets import CanvasBatch, collate_canvas


def test_collate_canvas_stacks_items() -> None:
    items = [(torch.full((3, 4, 4), i, dtype=torch.uint8), torch.tensor([4, i + 1]), i - 1)
             for i in range(3)]  # fmt: skip
    images, sizes, labels = collate_canvas(items)
    assert images.shape == (3, 3, 4, 4) and images.dtype == torch.uint8
    assert sizes.tolist() == [[4, 1], [4, 2], [4, 3]]
    assert labels.tolist() == [-1, 0, 1] and labels.dtype == torch.long


def test_collate_canvas_mixed_shapes_error() -> None:
    items = [(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.tensor([4, 4]), 0),
             (torch.zeros(3, 5, 4, dtype=torch.uint8), torch.tensor([5, 4]), 0)]  # fmt: skip
    with pytest.raises(ValueError, match="canvas"):
        collate_canvas(items)


def test_collate_canvas_gives_a_named_batch() -> None:
    items = [(torch.zeros(1, 2, 2, dtype=torch.uint8), torch.tensor([2, 2]), 3)] * 2
    batch = collate_canvas(items)
    assert isinstance(batch, CanvasBatch) and batch.labels.tolist() == [3, 3]
    with pytest.raises(ValueError, match="empty"):
        collate_canvas([])
