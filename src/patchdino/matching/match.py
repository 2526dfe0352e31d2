"""Patch matching entry point: dispatch to the grid or nearest-centre matcher by name."""

from __future__ import annotations

from patchdino.config.checks import literal_values
from patchdino.config.loss import MatchMode
from patchdino.data.geometry import ViewGeometry
from patchdino.matching.grid import match_grid
from patchdino.matching.nearest import match_nearest
from patchdino.matching.types import PatchMatches

MATCH_MODES: tuple[str, ...] = literal_values(MatchMode) or ()
"""``loss.terms.patch.matching`` values."""


def match_patches(
    a: ViewGeometry, b: ViewGeometry, mode: str = "grid", threshold: float = 0.5
) -> PatchMatches:
    """Match the patches of views ``a`` and ``b`` of the same images.

    Args:
        a: geometry of view A, boxes ``(B, 4)``, grid ``na``.
        b: geometry of view B, boxes ``(B, 4)``, grid ``nb``, on the same device.
        mode: ``"grid"`` (the paper's algorithm, ``K = min(na, nb) ** 2``) or ``"nearest"``
            (nearest patch centre of the coarser view, ``K = max(na, nb) ** 2``).
        threshold: largest centre distance in coarse patches; used by ``"nearest"`` only.

    Returns:
        ``PatchMatches`` with ``(B, K)`` tensors on the views' device; ``K`` depends only on the
        two grids and the mode.

    Raises:
        ValueError: for an unknown mode, different batch sizes or devices, or a bad threshold.
    """
    if mode == "grid":
        return match_grid(a, b)
    if mode == "nearest":
        return match_nearest(a, b, threshold)
    raise ValueError(f"unknown matching mode {mode!r}; valid modes are {', '.join(MATCH_MODES)}")
