"""Resumable, rank-aware batches of canvas images.

The order of samples is a pure function of ``(seed, epoch)``: resuming at any step replays
exactly the batches an uninterrupted run would have seen, and each rank of a distributed run
takes its own shard of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from patchdino.data.datasets.base import CanvasBatch, collate_canvas
from patchdino.data.workers import WorkerSignals, iterate

__all__ = ["BatchStream", "CanvasBatch", "batch_indices", "epoch_permutation", "resume_position"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of ``epoch``'s data randomness, the same for every rank."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """``(num_samples,)`` shuffled indices, the same for every rank."""
    return torch.randperm(num_samples, generator=epoch_generator(seed, epoch))


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


def resume_position(
    samples_seen: int, saved_global_batch: int, global_batch: int, num_samples: int
) -> int:
    """Where a stream of global batches of ``global_batch`` continues another one's data.

    A run that stepped through global (micro-)batches of ``saved_global_batch`` samples
    (per-process batch times its world size) and consumed ``samples_seen`` samples stopped in
    some epoch, part-way through its permutation. The continuation, whose global batch may be
    different (another world size or per-process batch), resumes in the same epoch at the
    same place in the permutation, rounded down to a whole batch of its own (at most
    ``global_batch - 1`` samples are seen twice); if the saved run had gone past the last full
    batch of the new size, it starts the next epoch. Each epoch drops a different remainder
    for each batch size, so ``samples_seen // global_batch`` alone drifts by whole epochs.

    Args:
        samples_seen: samples consumed by the saved run (all ranks, all micro-steps).
        saved_global_batch: samples per micro-step of the saved run, over all ranks.
        global_batch: samples per micro-step of the continuing run, over all ranks.
        num_samples: size of the data set (the same for both runs).

    Returns:
        The continuing stream's position in micro-steps since the start of epoch 0.

    Raises:
        ValueError: when a batch is larger than the data set or a count is negative.
    """
    if samples_seen < 0 or min(saved_global_batch, global_batch) < 1:
        raise ValueError(
            f"need samples_seen >= 0 and positive batches, got {samples_seen}, "
            f"{saved_global_batch}, {global_batch}"
        )
    if max(saved_global_batch, global_batch) > num_samples:
        raise ValueError(
            f"a global batch of {max(saved_global_batch, global_batch)} does not fit in a data "
            f"set of {num_samples} samples"
        )
    epoch, done = divmod(samples_seen // saved_global_batch, num_samples // saved_global_batch)
    steps_per_epoch = num_samples // global_batch
    return epoch * steps_per_epoch + min(done * saved_global_batch // global_batch, steps_per_epoch)


class _IndexBatches(torch.utils.data.Sampler[list[int]]):
    def __init__(self, batches: list[Tensor]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchStream:
    """Iterates a data set's batches for one rank, from any (epoch, step) on.

    In-memory data sets (with an ``images`` tensor attribute, e.g. CIFAR or Fashion-MNIST) are
    sliced directly; file-based ones are decoded by ``num_workers`` DataLoader workers, which
    ignore the signals ``main_signals`` (those the main process handles itself, see
    :mod:`patchdino.data.workers`).
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        main_signals: Sequence[str] = (),
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.main_signals = tuple(main_signals)
        self.num_samples = len(dataset)  # type: ignore[arg-type]

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[CanvasBatch]:
        """Batches of ``epoch`` from its ``start_step``-th step on.

        Raises:
            WorkerDiedError: a loader worker died while a batch was awaited.
            BadImageError: a file that a ``"fail"`` data set could not read, also when a
                loader worker met it (the worker's own exception crosses as text only).
        """
        batches = batch_indices(
            self.num_samples, self.batch_size, self.seed, epoch, self.rank, self.world_size
        )[start_step:]
        images = getattr(self.dataset, "images", None)
        if isinstance(images, Tensor):
            labels = getattr(self.dataset, "labels", None)
            for index in batches:
                yield CanvasBatch(
                    images[index], _sizes_for(images, index), _labels_for(labels, index)
                )
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=_IndexBatches(batches),
            num_workers=self.num_workers,
            collate_fn=collate_canvas,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            worker_init_fn=WorkerSignals(self.main_signals) if self.main_signals else None,
            # Its own generator: starting an iterator draws the workers' base seed, which
            # from the global generator would shift the training step's randomness (drop
            # path) at every epoch start and at the step a resumed run starts from.
            generator=epoch_generator(self.seed, epoch),
        )
        try:
            yield from iterate(loader, self.main_signals)
        except Exception as err:
            log = getattr(self.dataset, "bad_images", None)
            failure = log.failure() if log is not None else None
            if failure is None:
                raise
            raise failure from err


def _sizes_for(images: Tensor, index: Tensor) -> Tensor:
    height, width = images.shape[-2:]
    return torch.tensor([height, width], dtype=torch.long).expand(len(index), 2).clone()


def _labels_for(labels: Any, index: Tensor) -> Tensor:
    if labels is None:
        return torch.full((len(index),), -1, dtype=torch.long)
    return torch.as_tensor(labels)[index].long()
