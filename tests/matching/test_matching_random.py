"""The batched matchers against the plain per-sample loops, over thousands of random geometries."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from matching_reference import ViewSpec, grid_reference, nearest_reference, sample_pairs

from patchdino.data.multicrop import MultiCropAugmentation, MultiCropSpec
from patchdino.matching import match_grid, match_nearest

GLOBAL_224 = ViewSpec(224, 16, (0.4, 1.0))
LOCAL_96 = ViewSpec(96, 16, (0.05, 0.4))
# (view A, view B, source image side range, integer boxes, samples)
CONFIGS = [
    (GLOBAL_224, LOCAL_96, (160, 500), True, 600),
    (LOCAL_96, GLOBAL_224, (160, 500), True, 300),
    (GLOBAL_224, GLOBAL_224, (160, 500), True, 300),
    (GLOBAL_224, LOCAL_96, (160, 500), False, 300),
    (ViewSpec(32, 4, (0.4, 1.0)), ViewSpec(16, 4, (0.05, 0.4)), (28, 32), True, 800),
    (ViewSpec(28, 4, (0.3, 1.0)), ViewSpec(12, 4, (0.05, 0.5)), (20, 32), True, 800),
    (ViewSpec(64, 8, (0.2, 1.0)), ViewSpec(32, 8, (0.05, 0.6)), (40, 120), True, 600),
]
IDS = ["224-96", "96-224", "224-224", "224-96-float", "32-16", "28-12", "64-32"]


def _check_padding(matches: torch.Tensor, valid: torch.Tensor) -> None:
    assert (matches[~valid] == 0).all()


@pytest.mark.parametrize(("spec_a", "spec_b", "sides", "integer", "count"), CONFIGS, ids=IDS)
def test_grid_equals_loop(
    spec_a: ViewSpec, spec_b: ViewSpec, sides: tuple[int, int], integer: bool, count: int
) -> None:
    rng = random.Random(count + sides[0])
    samples, a, b = sample_pairs(rng, count, spec_a, spec_b, sides, integer)
    matches = match_grid(a, b)
    assert matches.valid.shape == (count, min(a.grid, b.grid) ** 2)
    _check_padding(matches.index_a, matches.valid)
    _check_padding(matches.index_b, matches.valid)
    total = 0
    for i, (box_a, flip_a, box_b, flip_b, _, _) in enumerate(samples):
        expected = grid_reference(box_a, flip_a, a.grid, box_b, flip_b, b.grid)
        assert matches.pairs(i) == expected, f"sample {i}: {samples[i]}"
        total += len(expected)
    assert total > 0


@pytest.mark.parametrize("threshold", [0.5, 0.3, 1.0])
@pytest.mark.parametrize(("spec_a", "spec_b", "sides", "integer", "count"), CONFIGS, ids=IDS)
def test_nearest_equals_loop(
    spec_a: ViewSpec,
    spec_b: ViewSpec,
    sides: tuple[int, int],
    integer: bool,
    count: int,
    threshold: float,
) -> None:
    count = count // 2
    samples, a, b = sample_pairs(random.Random(count), count, spec_a, spec_b, sides, integer)
    matches = match_nearest(a, b, threshold)
    assert matches.valid.shape == (count, max(a.grid, b.grid) ** 2)
    _check_padding(matches.index_a, matches.valid)
    _check_padding(matches.index_b, matches.valid)
    a_coarser = 0
    for i, (box_a, flip_a, box_b, flip_b, _, _) in enumerate(samples):
        expected = nearest_reference(
            box_a, flip_a, a.grid, box_b, flip_b, b.grid, threshold, brute_force_check=i < 10
        )
        assert matches.pairs(i) == expected, f"sample {i}: {samples[i]}"
        a_coarser += (box_a[2] / a.grid) * (box_a[3] / a.grid) >= (box_b[2] / b.grid) * (
            box_b[3] / b.grid
        )
    assert 0 < a_coarser < count  # both sides get to be the coarser one


@pytest.mark.parametrize("geometry", ["per_batch", "per_sample"])
def test_sampler_geometry_equals_loop(geometry: str) -> None:
    """Views drawn by the multi-crop sampler, once per batch or per sample, match as the loops."""
    spec = MultiCropSpec(
        global_size=64, local_size=32, patch_size=8, num_local=2, geometry=geometry
    )
    augment = MultiCropAugmentation(spec)
    sizes = torch.tensor([[120, 120], [90, 60], [120, 120], [45, 100]] * 4)  # (16, 2)
    images = torch.zeros(len(sizes), 1, 120, 120, dtype=torch.uint8)
    checked = 0
    for seed in range(12):
        views = augment(images, sizes, generator=torch.Generator().manual_seed(seed)).geometry
        if geometry == "per_batch":
            assert all(torch.equal(v.boxes[0], v.boxes[4]) for v in views)
        for i, v in ((0, 1), (0, 2), (1, 3), (2, 3)):
            a, b = views[i], views[v]
            grid, nearest = match_grid(a, b), match_nearest(a, b, 0.5)
            for k in range(len(sizes)):
                box_a, box_b = tuple(a.boxes[k].tolist()), tuple(b.boxes[k].tolist())
                flip_a, flip_b = bool(a.flipped[k]), bool(b.flipped[k])
                expected = grid_reference(box_a, flip_a, a.grid, box_b, flip_b, b.grid)
                assert grid.pairs(k) == expected, (seed, i, v, k)
                assert nearest.pairs(k) == nearest_reference(
                    box_a, flip_a, a.grid, box_b, flip_b, b.grid, 0.5
                ), (seed, i, v, k)
                checked += bool(expected)
    assert checked > 100


def test_grid_clipped_slices_are_exercised() -> None:
    """The odd-grid configuration hits slices that the rounding pushes past the grid edge."""
    spec_a, spec_b, sides, _, count = CONFIGS[IDS.index("28-12")]
    samples, _, _ = sample_pairs(random.Random(count + sides[0]), count, spec_a, spec_b, sides)
    clipped = 0
    for box_a, _, box_b, _, _, _ in samples:
        left = max(box_a[1], box_b[1])
        right = min(box_a[1] + box_a[3], box_b[1] + box_b[3])
        for (_, origin, _, w), n in ((box_a, 7), (box_b, 3)):
            clipped += (
                right > left and round(n * (left - origin) / w) + round(n * (right - left) / w) > n
            )
    assert clipped > 0


def test_exact_thinning_vs_numpy_linspace() -> None:
    """floor(linspace) in exact integers; NumPy's float linspace differs only by float error.

    Wherever the two disagree for sub-grids of up to 64 patches, the exact quotient is an integer
    and NumPy returns one less; they agree on every grid of up to 30 patches per side.
    """
    disagreements = []
    for m in range(1, 65):
        for k in range(1, m + 1):
            exact = [j * (m - 1) // (k - 1) if k > 1 else 0 for j in range(k)]
            numpy = np.floor(np.linspace(0, m - 1, k)).astype(int).tolist()
            for j, (e, v) in enumerate(zip(exact, numpy)):
                if e != v:
                    assert j * (m - 1) % (k - 1) == 0 and v == e - 1, (m, k, j)
                    disagreements.append(m)
    assert not disagreements or min(disagreements) > 30


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize(("spec_a", "spec_b", "sides", "integer", "count"), CONFIGS, ids=IDS)
def test_cuda_equals_cpu(
    spec_a: ViewSpec, spec_b: ViewSpec, sides: tuple[int, int], integer: bool, count: int
) -> None:
    _, a, b = sample_pairs(random.Random(count), count, spec_a, spec_b, sides, integer)
    device = torch.device("cuda")
    for match in (match_grid, match_nearest):
        cpu = match(a, b)
        gpu = match(a.to(device), b.to(device))
        for name in ("index_a", "index_b", "valid"):
            assert getattr(gpu, name).device.type == "cuda"
            assert torch.equal(getattr(gpu, name).cpu(), getattr(cpu, name)), (match, name)
