"""What the loss terms need from a projection head, and the pair of heads of one network."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class ProjectionHead(Protocol):
    """What the loss needs from a head (see :class:`~patchdino.models.head.DINOHead`)."""

    def forward_bottleneck(self, x: Tensor) -> Tensor:
        """``(M, D)`` tokens -> ``(M, d)`` normalised bottleneck features."""
        ...

    def last_layer_weight(self) -> Tensor:
        """``(K, d)`` normalised last-layer weight."""
        ...


HeadPair = tuple[ProjectionHead, ProjectionHead]
"""``(CLS head, patch head)``; the same head twice when it is shared."""
