"""Grid matching: the paper's box-intersection patch matcher, batched.

For two views of the same image, the boxes are intersected in source pixels; each view keeps the
slice of its patch grid that lies inside the intersection, and the two sub-grids are paired one
to one, axis by axis, thinning the larger one evenly (docs/method.md §2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchdino.data.geometry import ViewGeometry
from patchdino.matching.types import PatchMatches


def check_view_pair(a: ViewGeometry, b: ViewGeometry) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` describe the same batch on the same device."""
    if a.batch_size != b.batch_size:
        raise ValueError(
            f"views to match must have the same batch size, got {a.batch_size} and {b.batch_size}"
        )
    if a.boxes.device != b.boxes.device:
        raise ValueError(
            f"views to match must be on the same device, got {a.boxes.device} and {b.boxes.device}"
        )


def _axis_slice(origin: Tensor, extent: Tensor, lo: Tensor, length: Tensor, n: int) -> Tensor:
    """Slice of one axis of a view's patch grid that lies inside ``[lo, lo + length)``.

    ``start = round(n * (lo - origin) / extent)`` and ``count = round(n * length / extent)``,
    rounding half to even. The slice is cut at the grid edge exactly as slicing a list of ``n``
    patches would: ``start + count`` can exceed ``n`` by one for an odd ``n`` when the overlap
    reaches the box edge and both rounded quantities end in exactly ``.5``
    (e.g. ``n = 3`` and the overlap is the right half of the box: ``1.5 + 1.5`` rounds to
    ``2 + 2``). Empty overlaps (``length <= 0``) give ``count = 0``.

    Args:
        origin: ``(B,)`` float64 box top (or left) in source pixels.
        extent: ``(B,)`` float64 box height (or width).
        lo: ``(B,)`` float64 intersection top (or left).
        length: ``(B,)`` float64 intersection height (or width); ``<= 0`` when empty.
        n: patches per side of the view.

    Returns:
        ``(B, 2)`` long tensor ``[start, count]`` in the unflipped layout, ``0 <= count <= n``.
    """
    start = torch.round(n * (lo - origin) / extent)
    count = torch.round(n * length / extent)
    count = (start + count).clamp(max=n) - start
    count = torch.where(length > 0, count, torch.zeros_like(count))
    return torch.stack([start, count], dim=-1).long()


def _thin(j: Tensor, count: Tensor, k: Tensor) -> Tensor:
    """Offsets ``floor(linspace(0, count - 1, k))[j]`` in exact integer arithmetic.

    ``floor(j * (count - 1) / (k - 1))`` (``0`` when ``k == 1``). NumPy's float ``linspace``
    returns one less where the quotient is an integer but the float product rounds below it; for
    grids of up to 30 patches per side both agree, the first difference is ``count = 31,
    k = 23, j = 11`` (quotient 15). The exact value is used here.

    Args:
        j: ``(m,)`` long pair positions ``0 .. m - 1``.
        count: ``(B, 1)`` long sub-grid length along the axis.
        k: ``(B, 1)`` long number of pairs along the axis, ``k <= count``.

    Returns:
        ``(B, m)`` long offsets into the sub-grid; meaningful for ``j < k`` only.
    """
    return j * (count - 1) // (k - 1).clamp(min=1)


def match_grid(a: ViewGeometry, b: ViewGeometry) -> PatchMatches:
    """Pair the patches of views ``a`` and ``b`` by the paper's grid algorithm.

    Coordinates are computed in float64, in the same order of operations as a plain Python loop,
    so the pairs equal those of a per-sample reference exactly. For a non-empty overlap a slice
    starts inside ``0 .. n``; rounding can push its end one past the grid (odd ``n`` only), and
    it is then cut at the grid edge, as slicing a list of patches would.

    Pairs are listed in row-major order of the paired sub-grid (row pair ``i``, column pair
    ``j`` at position ``i * m + j``, ``m = min(na, nb)``); within each axis, pairs follow the
    source image top-to-bottom and left-to-right, in both views, flipped or not.

    Args:
        a: geometry of view A, boxes ``(B, 4)``, grid ``na``.
        b: geometry of view B, boxes ``(B, 4)``, grid ``nb``, on the same device.

    Returns:
        ``PatchMatches`` with ``(B, K)`` tensors, ``K = min(na, nb) ** 2`` (data independent).

    Raises:
        ValueError: if the batch sizes or devices differ.
    """
    check_view_pair(a, b)
    na, nb = a.grid, b.grid
    m = min(na, nb)
    ta, la, ha, wa = a.boxes.to(torch.float64).unbind(-1)  # (B,) each
    tb, lb, hb, wb = b.boxes.to(torch.float64).unbind(-1)
    top, left = torch.maximum(ta, tb), torch.maximum(la, lb)
    height = torch.minimum(ta + ha, tb + hb) - top
    width = torch.minimum(la + wa, lb + wb) - left

    rows_a = _axis_slice(ta, ha, top, height, na)  # (B, 2)
    rows_b = _axis_slice(tb, hb, top, height, nb)
    cols_a = _axis_slice(la, wa, left, width, na)
    cols_b = _axis_slice(lb, wb, left, width, nb)
    k_rows = torch.minimum(rows_a[:, 1:], rows_b[:, 1:])  # (B, 1)
    k_cols = torch.minimum(cols_a[:, 1:], cols_b[:, 1:])

    j = torch.arange(m, device=a.boxes.device)  # (m,)
    r_a = rows_a[:, :1] + _thin(j, rows_a[:, 1:], k_rows)  # (B, m)
    r_b = rows_b[:, :1] + _thin(j, rows_b[:, 1:], k_rows)
    c_a = cols_a[:, :1] + _thin(j, cols_a[:, 1:], k_cols)  # unflipped columns, (B, m)
    c_b = cols_b[:, :1] + _thin(j, cols_b[:, 1:], k_cols)
    c_a = torch.where(a.flipped[:, None], na - 1 - c_a, c_a)
    c_b = torch.where(b.flipped[:, None], nb - 1 - c_b, c_b)

    valid = (j < k_rows)[:, :, None] & (j < k_cols)[:, None, :]  # (B, m, m)
    index_a = (r_a[:, :, None] * na + c_a[:, None, :]).masked_fill(~valid, 0)
    index_b = (r_b[:, :, None] * nb + c_b[:, None, :]).masked_fill(~valid, 0)
    flat = (a.batch_size, m * m)
    return PatchMatches(index_a.reshape(flat), index_b.reshape(flat), valid.reshape(flat))
