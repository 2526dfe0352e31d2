"""A validation split held out of a training set, fixed by its size alone.

Recipes and hyper-parameters are chosen on images the pretraining never saw and the test set
is read once, at the end. :func:`holdout_indices` draws the held-out images with a fixed seed,
so every command that names the same ``holdout`` gets the same split.
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.in_memory import InMemoryDataset

HOLDOUT_SEED = 0
PARTS = ("train", "val")


def holdout_indices(num: int, holdout: int) -> tuple[Tensor, Tensor]:
    """``(kept, held_out)``: sorted ``(num - holdout,)`` and ``(holdout,)`` long indices.

    Raises:
        ValueError: unless ``0 < holdout < num``.
    """
    if not 0 < holdout < num:
        raise ValueError(
            f"data.holdout must be between 1 and {num - 1} for {num} images, got {holdout}"
        )
    order = torch.randperm(num, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return order[holdout:].sort().values, order[:holdout].sort().values


class SubsetDataset(CanvasDataset):
    """The items ``indices`` of ``base``, in that order, with their labels."""

    def __init__(self, base: CanvasDataset, indices: Tensor) -> None:
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices]
        self.classes = base.classes
        self.canvas = base.canvas
        self.channels = base.channels
        self.bad_images = base.bad_images

    def __getitem__(self, index: int) -> CanvasItem:
        return self.base[int(self.indices[index])]

    def item_names(self) -> list[str]:
        """The base data set's names of the items."""
        names = self.base.item_names()
        return [names[int(i)] for i in self.indices]


def holdout_part(dataset: CanvasDataset, holdout: int, part: str) -> CanvasDataset:
    """The ``"train"`` (kept) or ``"val"`` (held-out) part of a training set.

    In-memory data sets stay in memory (their ``images`` tensor is indexed once).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    kept, held = holdout_indices(len(dataset), holdout)
    indices = kept if part == "train" else held
    if isinstance(dataset, InMemoryDataset):
        names = torch.arange(len(dataset)) if dataset.indices is None else dataset.indices
        return InMemoryDataset(
            dataset.images[indices],
            dataset.labels[indices],
            dataset.classes,
            dataset.canvas,
            indices=names[indices],
        )
    return SubsetDataset(dataset, indices)
