"""The named structure one training step consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from patchdino.data.geometry import ViewGeometry


@dataclass
class MultiCropBatch:
    """Augmented views of ``B`` source images with their per-sample geometry.

    Attributes:
        global_views: one ``(B, C, G, G)`` float tensor per global view, normalised.
        local_views: one ``(B, C, S, S)`` float tensor per local view, normalised (may be empty).
        global_geometry: geometry of each global view, aligned with ``global_views``.
        local_geometry: geometry of each local view, aligned with ``local_views``.
        labels: ``(B,)`` long tensor of class labels, or None for unlabelled data.
    """

    global_views: list[Tensor]
    local_views: list[Tensor]
    global_geometry: list[ViewGeometry]
    local_geometry: list[ViewGeometry]
    labels: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.global_views[0].shape[0])

    @property
    def views(self) -> list[Tensor]:
        """All views, globals first."""
        return [*self.global_views, *self.local_views]

    @property
    def geometry(self) -> list[ViewGeometry]:
        """Geometry of all views, globals first."""
        return [*self.global_geometry, *self.local_geometry]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiCropBatch:
        """Copy of the batch on ``device``."""
        return MultiCropBatch(
            [v.to(device, non_blocking=non_blocking) for v in self.global_views],
            [v.to(device, non_blocking=non_blocking) for v in self.local_views],
            [g.to(device) for g in self.global_geometry],
            [g.to(device) for g in self.local_geometry],
            None if self.labels is None else self.labels.to(device, non_blocking=non_blocking),
        )
