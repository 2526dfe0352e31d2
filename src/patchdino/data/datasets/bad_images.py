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
REASON_BYTES = 1024
"""Room for the reason of the failure a loader worker records (UTF-8, cut to fit)."""


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
        # The file that stopped a "fail" data set, and why: (index,), (REASON_BYTES,) UTF-8.
        self._failed = torch.full((1,), -1, dtype=torch.long).share_memory_()
        self._reason = torch.zeros(REASON_BYTES, dtype=torch.uint8).share_memory_()

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

    def record_failure(self, index: int, reason: str) -> None:
        """Record that item ``index`` stopped the data set (``on_bad_image="fail"``), for
        :meth:`failure` in any process; the first failure recorded is kept."""
        if int(self._failed[0]) >= 0:
            return
        data = reason.encode()[:REASON_BYTES]
        self._reason.zero_()
        self._reason[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self._failed[0] = index

    def failure(self) -> BadImageError | None:
        """The :class:`BadImageError` of the failure recorded by any process (a loader worker,
        whose own exception reaches the main process only as text), or None."""
        index = int(self._failed[0])
        if index < 0:
            return None
        reason = bytes(self._reason.tolist()).rstrip(b"\0").decode(errors="replace")
        return BadImageError(self._paths[index], reason)

    @property
    def count(self) -> int:
        """Number of distinct unreadable items found so far."""
        return int(self.flags.sum())

    @property
    def paths(self) -> list[Path]:
        """The unreadable files found so far, in item order."""
        return [self._paths[i] for i in torch.nonzero(self.flags).flatten().tolist()]
