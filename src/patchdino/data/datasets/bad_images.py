"""Unreadable image files: the error raised for one, and a log shared with loader workers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from patchdino.config.checks import literal_values
from patchdino.config.data import BadImagePolicy

logger = logging.getLogger("patchdino.data")

BAD_IMAGE_POLICIES: tuple[str, ...] = literal_values(BadImagePolicy) or ()
"""``data.on_bad_image`` values."""


class BadImageError(ValueError):
    """A file that cannot be decoded as an image (zero bytes, truncated, not an image)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot read image {path}: {reason}. Remove or replace the file, "
            "or load the data set with on_bad_image='skip'"
        )


def check_policy(on_bad_image: str) -> str:
    """Return ``on_bad_image`` if it is a known policy, else raise a ValueError."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
    return on_bad_image


class BadImageLog:
    """Which items of a data set turned out unreadable, visible from every process.

    The flags live in a shared-memory tensor, so marks made inside DataLoader worker
    processes (forked or spawned) are seen by the training loop through the data set
    object it holds: ``dataset.bad_images.count``. Marking is idempotent, so concurrent
    workers cannot double count. Each bad file is logged once per process (a file met
    again in a later epoch by a fresh worker is not logged again once flagged).

    Args:
        paths: the file of each item, in item order.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self.flags = torch.zeros(len(self._paths), dtype=torch.uint8).share_memory_()  # (N,)
        self._logged: set[int] = set()

    def __len__(self) -> int:
        return len(self._paths)

    def is_bad(self, index: int) -> bool:
        """Whether item ``index`` is already known to be unreadable."""
        return bool(self.flags[index])

    def mark(self, index: int, reason: str) -> None:
        """Flag item ``index`` as unreadable and log it the first time it is seen."""
        already_flagged = self.is_bad(index)
        self.flags[index] = 1
        if not already_flagged and index not in self._logged:
            self._logged.add(index)
            logger.warning(
                "skipping unreadable image %s (%s); another image takes its place",
                self._paths[index],
                reason,
            )

    @property
    def count(self) -> int:
        """Number of distinct unreadable items found so far."""
        return int(self.flags.sum())

    @property
    def paths(self) -> list[Path]:
        """The unreadable files found so far, in item order."""
        return [self._paths[i] for i in torch.nonzero(self.flags).flatten().tolist()]
