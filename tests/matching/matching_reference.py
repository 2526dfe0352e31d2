"""Plain per-sample reference matchers and a random view sampler, for the matching tests.

Everything here works on Python floats, ints and lists, one sample at a time, written straight
from docs/method.md §2 without any vectorisation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from patchdino.data.geometry import ViewGeometry

Box = tuple[float, float, float, float]  # top, left, height, width


@dataclass(frozen=True)
class ViewSpec:
    """Size, patch size and crop scale range of one kind of view."""

    size: int
    patch: int
    scale: tuple[float, float]


def sample_box(
    rng: random.Random, height: int, width: int, scale: tuple[float, float], integer: bool
) -> Box:
    """A RandomResizedCrop-like box (aspect ratio 3/4 to 4/3) inside a ``height x width`` image."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if integer:
            w, h = round(w), round(h)
        if 0 < w <= width and 0 < h <= height:
            if integer:
                return (rng.randint(0, height - h), rng.randint(0, width - w), h, w)
            return (rng.uniform(0, height - h), rng.uniform(0, width - w), h, w)
    side = min(height, width)
    return ((height - side) // 2, (width - side) // 2, side, side)


def sample_pairs(
    rng: random.Random,
    count: int,
    spec_a: ViewSpec,
    spec_b: ViewSpec,
    image_sides: tuple[int, int],
    integer: bool = True,
) -> tuple[list[tuple[Box, bool, Box, bool, int, int]], ViewGeometry, ViewGeometry]:
    """``count`` random samples, each with its own image size and two views of it.

    Returns:
        The samples as Python tuples ``(box_a, flip_a, box_b, flip_b, image_h, image_w)`` and the
        same geometry as two batched ``ViewGeometry`` (float32 boxes for integer boxes, float64
        otherwise, so that the float boxes reach the matcher unchanged).
    """
    samples = []
    for _ in range(count):
        h, w = rng.randint(*image_sides), rng.randint(*image_sides)
        box_a = sample_box(rng, h, w, spec_a.scale, integer)
        box_b = sample_box(rng, h, w, spec_b.scale, integer)
        samples.append((box_a, rng.random() < 0.5, box_b, rng.random() < 0.5, h, w))
    dtype = torch.float32 if integer else torch.float64
    views = []
    for spec, box_at, flip_at in ((spec_a, 0, 1), (spec_b, 2, 3)):
        boxes = torch.tensor([s[box_at] for s in samples], dtype=dtype)
        flips = torch.tensor([s[flip_at] for s in samples], dtype=torch.bool)
        views.append(ViewGeometry(boxes, flips, spec.size, spec.patch))
    return samples, views[0], views[1]


def _subgrid(n: int, origin: float, extent: float, lo: float, length: float) -> list[int]:
    """Grid positions (unflipped) of one view axis inside ``[lo, lo + length)``."""
    start = round(n * (lo - origin) / extent)
    count = round(n * length / extent)
    return list(range(n))[start : start + count]


def _thin(positions: list[int], k: int) -> list[int]:
    """``k`` of ``positions`` at floor(linspace(0, len - 1, k)), exact fractions."""
    if k == 1:
        return positions[:1]
    return [positions[j * (len(positions) - 1) // (k - 1)] for j in range(k)]


def grid_reference(
    box_a: Box, flip_a: bool, n_a: int, box_b: Box, flip_b: bool, n_b: int
) -> list[tuple[int, int]]:
    """The paper's grid matching of one sample, as a list of (index in A, index in B)."""
    ta, la, ha, wa = box_a
    tb, lb, hb, wb = box_b
    top, left = max(ta, tb), max(la, lb)
    bottom, right = min(ta + ha, tb + hb), min(la + wa, lb + wb)
    if bottom - top <= 0 or right - left <= 0:
        return []
    rows_a = _subgrid(n_a, ta, ha, top, bottom - top)
    rows_b = _subgrid(n_b, tb, hb, top, bottom - top)
    cols_a = _subgrid(n_a, la, wa, left, right - left)
    cols_b = _subgrid(n_b, lb, wb, left, right - left)
    if flip_a:
        cols_a = [n_a - 1 - c for c in cols_a]
    if flip_b:
        cols_b = [n_b - 1 - c for c in cols_b]
    k_rows, k_cols = min(len(rows_a), len(rows_b)), min(len(cols_a), len(cols_b))
    rows_a, rows_b = _thin(rows_a, k_rows), _thin(rows_b, k_rows)
    cols_a, cols_b = _thin(cols_a, k_cols), _thin(cols_b, k_cols)
    pairs = []
    for i in range(k_rows):
        for j in range(k_cols):
            pairs.append((rows_a[i] * n_a + cols_a[j], rows_b[i] * n_b + cols_b[j]))
    return pairs


def nearest_reference(
    box_a: Box,
    flip_a: bool,
    n_a: int,
    box_b: Box,
    flip_b: bool,
    n_b: int,
    threshold: float,
    brute_force_check: bool = False,
) -> list[tuple[int, int]]:
    """Nearest-centre matching of one sample, as a list of (index in A, index in B).

    With ``brute_force_check`` it also asserts that the chosen patch centre is as near as the
    nearest of all patch centres of the other view.
    """
    area_a = (box_a[2] / n_a) * (box_a[3] / n_a)
    area_b = (box_b[2] / n_b) * (box_b[3] / n_b)
    a_coarser = area_a >= area_b
    if a_coarser:
        (ts, ls, hs, ws), flip_s, ns = box_a, flip_a, n_a
        (td, ld, hd, wd), flip_d, nd = box_b, flip_b, n_b
    else:
        (ts, ls, hs, ws), flip_s, ns = box_b, flip_b, n_b
        (td, ld, hd, wd), flip_d, nd = box_a, flip_a, n_a
    pairs = []
    for r in range(ns):
        for c in range(ns):
            u = ns - 1 - c if flip_s else c
            x = ls + (u + 0.5) * ws / ns
            y = ts + (r + 0.5) * hs / ns
            ud = min(max(math.floor(nd * (x - ld) / wd), 0), nd - 1)
            rd = min(max(math.floor(nd * (y - td) / hd), 0), nd - 1)
            xd = ld + (ud + 0.5) * wd / nd
            yd = td + (rd + 0.5) * hd / nd
            if brute_force_check:
                best = min(
                    math.hypot(x - (ld + (q + 0.5) * wd / nd), y - (td + (p + 0.5) * hd / nd))
                    for p in range(nd)
                    for q in range(nd)
                )
                assert math.isclose(math.hypot(x - xd, y - yd), best, abs_tol=1e-9)
            dx = (x - xd) / (ws / ns)
            dy = (y - yd) / (hs / ns)
            if dx * dx + dy * dy <= threshold * threshold:
                cd = nd - 1 - ud if flip_d else ud
                pair = (r * ns + c, rd * nd + cd)
                pairs.append(pair if a_coarser else (pair[1], pair[0]))
    return pairs
