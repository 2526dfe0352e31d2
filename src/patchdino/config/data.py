"""The ``data`` section: where the images come from and how workers prepare them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from patchdino.config.section import Section

DatasetKind = Literal["imagefolder", "flat", "cifar10", "cifar100", "fashion_mnist", "mnist"]
"""The data set kinds (:data:`patchdino.data.datasets.KINDS` holds a record of each)."""
BadImagePolicy = Literal["skip", "fail"]
"""What to do with a corrupt, truncated or non-image file."""


@dataclass
class DataConfig(Section):
    """Where the images come from and how workers prepare them."""

    path: str = ""
    """Data set root. Empty means the default location of the kind (Fashion-MNIST only)."""
    kind: Literal["auto", DatasetKind] = "auto"
    """auto (detected from the folder) or a kind of :data:`patchdino.data.datasets.KINDS`:
    imagefolder, flat, cifar10, cifar100, fashion_mnist, mnist."""
    canvas: int | None = None
    """Longer image side after decoding (images padded to a square canvas); None keeps the
    native size, which requires all images to share one size (CIFAR, MNIST)."""
    channels: int | None = None
    """1 or 3; None keeps the data set's own (1 for MNIST-like, 3 otherwise)."""
    mean: tuple[float, ...] | None = None
    """Per-channel normalisation mean; None uses the data set's usual statistics."""
    std: tuple[float, ...] | None = None
    """Per-channel normalisation standard deviation; None uses the data set's usual statistics."""
    num_workers: int = 4
    """Data loader worker processes that decode images (0: in the main process)."""
    on_bad_image: BadImagePolicy = "skip"
    """skip | fail: what to do with a corrupt, truncated or non-image file."""
    holdout: int = 0
    """Training images held out for validation (a fixed random subset); pretraining never
    sees them and ``benchmarks/`` evaluate on them to choose recipes. 0: none."""

    def rules(self, prefix: str) -> list[str]:
        problems: list[str] = []
        if self.channels not in (None, 1, 3):
            problems.append(f"{prefix}channels must be 1, 3 or null, got {self.channels}")
        if self.canvas is not None and self.canvas <= 0:
            problems.append(f"{prefix}canvas must be > 0 or null, got {self.canvas}")
        if (self.mean is None) != (self.std is None):
            problems.append(f"{prefix}mean and {prefix}std must be given together")
        elif self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
                problems.append(f"{prefix}mean and {prefix}std must both have 1 or 3 values")
            if any(s <= 0 for s in self.std):
                problems.append(f"{prefix}std values must be > 0, got {self.std}")
        if self.num_workers < 0:
            problems.append(f"{prefix}num_workers must be >= 0, got {self.num_workers}")
        if self.holdout < 0:
            problems.append(f"{prefix}holdout must be >= 0, got {self.holdout}")
        return problems
