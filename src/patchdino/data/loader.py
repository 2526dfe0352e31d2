"""Resumable, rank-aware batches of canvas images.

The order of samples is a pure function of ``(seed, epoch)``: resuming at any step replays
exactly the batches an uninterrupted run would have seen, and each rank of a distributed run
takes its own shard of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class CanvasBatch:
    """Decoded images of one step on one rank.

    Attributes:
        images: ``(B, C, H, W)`` uint8 canvas images.
        sizes: ``(B, 2)`` long, valid ``[height, width]`` of each image on its canvas.
        labels: ``(B,)`` long, -1 where unknown.
    """

    images: Tensor
    sizes: Tensor
    labels: Tensor


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """``(num_samples,)`` shuffled indices, the same for every rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


def batch_indices(
    num_samples: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[Tensor]:
    """This rank's sample indices for every step of ``epoch``.

    The global batch is ``batch_size * world_size`` consecutive entries of the epoch
    permutation; rank ``r`` takes the ``r``-th slice of ``batch_size``. The incomplete last
    global batch is dropped.
    """
    order = epoch_permutation(num_samples, seed, epoch)
    global_batch = batch_size * world_size
    steps = num_samples // global_batch
    return [
        order[s * global_batch + rank * batch_size : s * global_batch + (rank + 1) * batch_size]
        for s in range(steps)
    ]


class _IndexBatches(torch.utils.data.Sampler[list[int]]):
    def __init__(self, batches: list[Tensor]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _collate(items: list[tuple[Tensor, Tensor, int]]) -> CanvasBatch:
    return CanvasBatch(
        torch.stack([item[0] for item in items]),
        torch.stack([item[1] for item in items]),
        torch.tensor([int(item[2]) for item in items], dtype=torch.long),
    )


class BatchStream:
    """Iterates a data set's batches for one rank, from any (epoch, step) on.

    In-memory data sets (with an ``images`` tensor attribute, e.g. CIFAR or Fashion-MNIST) are
    sliced directly; file-based ones are decoded by ``num_workers`` DataLoader workers.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.num_samples = len(dataset)  # type: ignore[arg-type]

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[CanvasBatch]:
        """Batches of ``epoch`` from its ``start_step``-th step on."""
        batches = batch_indices(
            self.num_samples, self.batch_size, self.seed, epoch, self.rank, self.world_size
        )[start_step:]
        images = getattr(self.dataset, "images", None)
        if isinstance(images, Tensor):
            sizes = getattr(self.dataset, "sizes", None)
            labels = getattr(self.dataset, "labels", None)
            for index in batches:
                yield CanvasBatch(
                    images[index],
                    _sizes_for(images, index) if sizes is None else sizes[index],
                    _labels_for(labels, index),
                )
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=_IndexBatches(batches),
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        yield from loader


def _sizes_for(images: Tensor, index: Tensor) -> Tensor:
    height, width = images.shape[-2:]
    return torch.tensor([height, width], dtype=torch.long).expand(len(index), 2).clone()


def _labels_for(labels: Any, index: Tensor) -> Tensor:
    if labels is None:
        return torch.full((len(index),), -1, dtype=torch.long)
    return torch.as_tensor(labels)[index].long()
