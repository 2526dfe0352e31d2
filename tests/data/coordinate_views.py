"""Coordinate-encoded images and the exact pixels a resized crop of them must hold.

A coordinate image stores each pixel's column in channel 0 and its row in channel 1: a linear
ramp, which bilinear sampling and area averaging reproduce exactly, so every pixel of a view
can be predicted from the view's recorded box and flip alone.
"""

from __future__ import annotations

import math

import torch


def coordinate_image(batch: int, height: int, width: int) -> torch.Tensor:
    """``(B, 2, H, W)``: channel 0 holds each pixel's column, channel 1 its row."""
    xs = torch.arange(width, dtype=torch.float64).expand(height, width)
    ys = torch.arange(height, dtype=torch.float64).unsqueeze(1).expand(height, width)
    return torch.stack([xs, ys]).expand(batch, 2, height, width).clone()


def expected_axis(
    start: float, length: float, size: int, limit: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value of a coordinate channel along one axis of the output, and an interior mask.

    Output pixel ``i`` averages ``ceil(length / size)`` bilinear samples spread evenly over its
    source interval; a linear ramp ``v(u) = u - 0.5`` read with clamp-to-edge gives their mean.
    Interior pixels (interval inside ``[0.5, limit - 0.5]``) must equal the ramp at the centre.
    """
    n = math.ceil(length / size)
    i = torch.arange(size, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    samples = start + (i + (k + 0.5) / n) * length / size  # (size, n) source coordinates
    value = (samples - 0.5).clamp(0, limit - 1).mean(dim=1)
    lo, hi = start + i[:, 0] * length / size, start + (i[:, 0] + 1) * length / size
    centre = start + (i[:, 0] + 0.5) * length / size - 0.5
    interior = (lo >= 0.5) & (hi <= limit - 0.5)
    return value, centre, interior


def check_view(
    view: torch.Tensor,
    box: torch.Tensor,
    flipped: bool,
    limits: tuple[int, int],
    axes: str = "xy",
) -> None:
    """Assert that ``view`` is ``box`` of a coordinate image, resized and maybe mirrored.

    Args:
        view: ``(len(axes), S, S)`` planes of a view, in coordinate units.
        box: ``(4,)`` ``[top, left, height, width]`` the view was cut from.
        flipped: whether the view was mirrored left-right.
        limits: ``(height, width)`` of the valid region, where sampling clamps to the edge.
        axes: which coordinate each plane of ``view`` encodes: "x" (column) or "y" (row).
    """
    top, left, h, w = (float(v) for v in box)
    size = view.shape[-1]
    if flipped:
        view = view.flip(-1)
    for plane, axis in zip(view, axes):
        if axis == "x":
            value, centre, interior = expected_axis(left, w, size, limits[1])
            plane = plane.transpose(0, 1)  # columns vary along the first index
        else:
            value, centre, interior = expected_axis(top, h, size, limits[0])
        assert torch.allclose(plane, value.unsqueeze(1).expand(size, size), atol=1e-3)
        # away from the image border: exactly the source coordinate of the pixel's centre
        inner = plane[interior]
        assert torch.allclose(inner, centre[interior, None].expand_as(inner), atol=1e-3)
