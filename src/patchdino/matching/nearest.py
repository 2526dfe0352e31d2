"""Nearest-centre matching: each patch of the coarser view paired with the nearest patch centre.

Every patch centre of the coarser view is mapped into the other view through source-image
coordinates and paired with the patch whose centre is nearest, if the two centres are at most
``threshold`` coarse patches apart (docs/method.md §2, "nearest" mode). Sub-patch exact,
unlike the grid matcher, and no patch of the coarser view is discarded by thinning.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from patchdino.data.geometry import ViewGeometry
from patchdino.matching.grid import check_view_pair
from patchdino.matching.types import PatchMatches


class _Axis(NamedTuple):
    """One axis of a view: ``(B,)`` float64 box top/left and height/width, grid, flips.

    ``flipped`` is the ``(B,)`` bool flip flag for the column axis, ``None`` for rows.
    """

    origin: Tensor
    extent: Tensor
    n: int
    flipped: Tensor | None


def _per(x: Tensor, n: int) -> Tensor:
    """``x / n`` correctly rounded on every device.

    CUDA divides by a CPU scalar as ``x * (1 / n)``, which can differ from ``x / n`` in the
    last bit and so flip a comparison; dividing by a tensor on ``x``'s device does not.
    """
    return x / torch.full((), n, dtype=x.dtype, device=x.device)


def _axis_centres(origin: Tensor, extent: Tensor, n: int, flipped: Tensor | None) -> Tensor:
    """Source coordinate of the patch centres along one axis of a view.

    Args:
        origin: ``(B,)`` float64 box top (or left) in source pixels.
        extent: ``(B,)`` float64 box height (or width).
        n: patches per side.
        flipped: ``(B,)`` bool for the column axis of a mirrored view; ``None`` for rows.

    Returns:
        ``(B, n)`` float64; entry ``i`` is the centre of view row (or column) ``i``.
    """
    i = torch.arange(n, device=origin.device, dtype=torch.float64).expand(origin.shape[0], n)
    if flipped is not None:  # view column c shows unflipped column n - 1 - c
        i = torch.where(flipped[:, None], n - 1 - i, i)
    return origin[:, None] + _per((i + 0.5) * extent[:, None], n)


def _axis_nearest(
    point: Tensor, origin: Tensor, extent: Tensor, n: int, flipped: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Patch of a view, along one axis, whose centre is nearest to source coordinates ``point``.

    On a regular grid that is the cell containing the point, clamped to the grid.

    Args:
        point: ``(B, m)`` float64 source coordinates.
        origin: ``(B,)`` float64 box top (or left) of the view.
        extent: ``(B,)`` float64 box height (or width).
        n: patches per side of the view.
        flipped: ``(B,)`` bool for the column axis of a mirrored view; ``None`` for rows.

    Returns:
        ``(B, m)`` long view row (or column) and ``(B, m)`` float64 source coordinate of its
        centre.
    """
    cell = torch.floor(n * (point - origin[:, None]) / extent[:, None]).clamp(0, n - 1)
    centre = origin[:, None] + _per((cell + 0.5) * extent[:, None], n)
    if flipped is not None:
        cell = torch.where(flipped[:, None], n - 1 - cell, cell)
    return cell.long(), centre


def _pad(t: Tensor, length: int) -> Tensor:
    """Right-pad ``(B, L)`` to ``(B, length)`` with zeros."""
    return torch.cat([t, t.new_zeros(t.shape[0], length - t.shape[1])], dim=1)


def _axis_pairs(a_coarser: Tensor, a: _Axis, b: _Axis) -> tuple[Tensor, Tensor]:
    """Per axis, the nearest other-view patch of each coarse patch and their distance.

    Args:
        a_coarser: ``(B, 1)`` bool, True where view A is the coarser one.
        a: view A along the axis, grid ``na``.
        b: view B along the axis, grid ``nb``.

    Returns:
        ``(B, M)`` long row (or column) in the other view for each coarse row (or column), and
        the ``(B, M)`` float64 signed distance between the centres in coarse patches, with
        ``M = max(na, nb)``; entries past the coarse view's grid are padding.
    """
    size = max(a.n, b.n)
    centre_a, centre_b = _axis_centres(*a), _axis_centres(*b)  # (B, na), (B, nb)
    point = torch.where(a_coarser, _pad(centre_a, size), _pad(centre_b, size))  # (B, M)
    cell_b, near_b = _axis_nearest(point, *b)
    cell_a, near_a = _axis_nearest(point, *a)
    cell = torch.where(a_coarser, cell_b, cell_a)
    near = torch.where(a_coarser, near_b, near_a)
    patch = torch.where(a_coarser, _per(a.extent, a.n)[:, None], _per(b.extent, b.n)[:, None])
    return cell, (point - near) / patch


def match_nearest(a: ViewGeometry, b: ViewGeometry, threshold: float = 0.5) -> PatchMatches:
    """Pair each patch of the coarser view with the nearest patch centre of the other view.

    Per sample, the coarser view is the one whose patches cover more source pixels, comparing
    ``(h / n) * (w / n)``; ties go to A. Each of its patches yields at most one pair, kept when
    the centres are at most ``threshold`` coarse patches apart: ``dx * dx + dy * dy <=
    threshold * threshold`` with ``dx``, ``dy`` in units of the coarse patch's width and
    height. A patch centre just outside the other view is paired with the border patch when
    within the threshold. Rows and columns are independent, so the work is done per axis and
    combined at the end. Coordinates are float64, computed in the same order of operations as a
    plain Python loop.

    Pairs are listed in the coarser view's row-major patch order (coarse patch ``(r, c)`` at
    position ``r * M + c``); the index in A is always in ``index_a``.

    Args:
        a: geometry of view A, boxes ``(B, 4)``, grid ``na``.
        b: geometry of view B, boxes ``(B, 4)``, grid ``nb``, on the same device.
        threshold: largest centre distance, in coarse patches, of a kept pair; ``>= 0``.

    Returns:
        ``PatchMatches`` with ``(B, K)`` tensors, ``K = M ** 2``, ``M = max(na, nb)``: the
        coarser view can be either side, so ``K`` bounds the patch count of both (data
        independent).

    Raises:
        ValueError: if the batch sizes or devices differ, or ``threshold`` is negative or NaN.
    """
    check_view_pair(a, b)
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number of patches, got {threshold}")
    na, nb = a.grid, b.grid
    size = max(na, nb)
    ta, la, ha, wa = a.boxes.to(torch.float64).unbind(-1)  # (B,) each
    tb, lb, hb, wb = b.boxes.to(torch.float64).unbind(-1)
    a_coarser = (_per(ha, na) * _per(wa, na) >= _per(hb, nb) * _per(wb, nb))[:, None]  # (B, 1)
    row, dy = _axis_pairs(a_coarser, _Axis(ta, ha, na, None), _Axis(tb, hb, nb, None))  # (B, M)
    col, dx = _axis_pairs(a_coarser, _Axis(la, wa, na, a.flipped), _Axis(lb, wb, nb, b.flipped))

    n_coarse = torch.where(a_coarser, na, nb)[:, :, None]  # (B, 1, 1)
    n_other = torch.where(a_coarser, nb, na)[:, :, None]
    i = torch.arange(size, device=a.boxes.device)
    coarse = (i[:, None] * n_coarse + i[None, :]).flatten(1)  # (B, M * M)
    other = (row[:, :, None] * n_other + col[:, None, :]).flatten(1)
    inside = ((i[:, None] < n_coarse) & (i[None, :] < n_coarse)).flatten(1)
    near = ((dy * dy)[:, :, None] + (dx * dx)[:, None, :]).flatten(1) <= threshold * threshold
    valid = inside & near  # (B, M * M)
    index_a = torch.where(a_coarser, coarse, other).masked_fill(~valid, 0)
    index_b = torch.where(a_coarser, other, coarse).masked_fill(~valid, 0)
    return PatchMatches(index_a, index_b, valid)
