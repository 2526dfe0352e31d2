"""Matched patches see the same source pixels, checked on images that encode their coordinates.

Each source pixel stores its own centre ``(x + 0.5, y + 0.5)``. Views are made by torchvision's
``resized_crop`` (+ ``hflip``) from the sampled geometry, independently of the matchers, so the
mean of a view patch is (up to resampling at the crop border) the source centre of that patch.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torchvision.transforms.functional as TF
from matching_reference import ViewSpec, sample_pairs

from patchdino.matching import match_grid, match_nearest

CONFIGS = [
    (ViewSpec(64, 8, (0.2, 1.0)), ViewSpec(32, 8, (0.05, 0.5)), (80, 160), 60),
    (ViewSpec(32, 4, (0.4, 1.0)), ViewSpec(16, 4, (0.05, 0.4)), (28, 32), 60),
    (ViewSpec(224, 16, (0.4, 1.0)), ViewSpec(96, 16, (0.05, 0.4)), (200, 300), 12),
]
IDS = ["64-32", "32-16", "224-96"]


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """``(2, height, width)`` image whose channels are the pixel centre's x and y."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs, ys]).double() + 0.5


def patch_centres(image: torch.Tensor, box: tuple, flipped: bool, spec: ViewSpec) -> torch.Tensor:
    """``(n * n, 2)`` mean encoded (x, y) of each patch of the view, in patch index order."""
    top, left, height, width = (int(v) for v in box)
    view = TF.resized_crop(image, top, left, height, width, [spec.size, spec.size], antialias=True)
    if flipped:
        view = TF.hflip(view)
    n = spec.size // spec.patch
    patches = view.reshape(2, n, spec.patch, n, spec.patch).mean(dim=(2, 4))  # (2, n, n)
    return patches.flatten(1).T


def patch_side(box: tuple, spec: ViewSpec) -> tuple[float, float]:
    """(width, height) of one patch of the view in source pixels."""
    n = spec.size // spec.patch
    return box[3] / n, box[2] / n


@pytest.mark.parametrize(("spec_a", "spec_b", "sides", "count"), CONFIGS, ids=IDS)
def test_matched_patches_show_the_same_source(
    spec_a: ViewSpec, spec_b: ViewSpec, sides: tuple[int, int], count: int
) -> None:
    samples, a, b = sample_pairs(random.Random(7), count, spec_a, spec_b, sides)
    grid, nearest = match_grid(a, b), match_nearest(a, b, 0.5)
    checked = 0
    for i, (box_a, flip_a, box_b, flip_b, h, w) in enumerate(samples):
        image = coordinate_image(h, w)
        centres_a = patch_centres(image, box_a, flip_a, spec_a)
        centres_b = patch_centres(image, box_b, flip_b, spec_b)
        side_a, side_b = patch_side(box_a, spec_a), patch_side(box_b, spec_b)
        # Grid: rounding the slices to the grid and thinning shift a pair along each axis by up
        # to about 1.3 patches of the larger patch along that axis (observed); 1.5 is allowed.
        for ia, ib in grid.pairs(i):
            for axis in (0, 1):
                error = abs(centres_a[ia, axis] - centres_b[ib, axis]).item()
                assert error <= 1.5 * max(side_a[axis], side_b[axis]), (i, ia, ib, axis)
            checked += 1
        # Nearest: distance in coarse patches within the threshold, up to resampling at the crop
        # border (half a source pixel allowed).
        coarse = side_a if side_a[0] * side_a[1] >= side_b[0] * side_b[1] else side_b
        for ia, ib in nearest.pairs(i):
            dx, dy = (centres_a[ia] - centres_b[ib]).tolist()
            distance = math.hypot(dx / coarse[0], dy / coarse[1])
            assert distance <= 0.5 + 0.5 / min(coarse), (i, ia, ib, distance)
            checked += 1
    assert checked > count
