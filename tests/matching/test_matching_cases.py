"""Hand-computed matches, the output contract and input validation of the matchers."""

from __future__ import annotations

import pytest
import torch

from patchdino.data.geometry import ViewGeometry
from patchdino.matching import MATCH_MODES, match_grid, match_nearest, match_patches


def view(
    box: tuple[float, float, float, float], flipped: bool, size: int, patch: int
) -> ViewGeometry:
    """A batch of one view."""
    return ViewGeometry(
        torch.tensor([box], dtype=torch.float32), torch.tensor([flipped]), size, patch
    )


def both_modes(a: ViewGeometry, b: ViewGeometry) -> dict[str, list[tuple[int, int]]]:
    """Sorted pairs of the single sample, per mode (the order is checked against the loops)."""
    return {mode: sorted(match_patches(a, b, mode).pairs(0)) for mode in MATCH_MODES}


def test_identical_boxes_give_identity_pairs() -> None:
    a = view((10, 20, 100, 80), False, 64, 16)
    identity = [(i, i) for i in range(16)]
    assert both_modes(a, a) == {"grid": identity, "nearest": identity}
    flipped = view((10, 20, 100, 80), True, 64, 16)
    assert both_modes(flipped, flipped) == {"grid": identity, "nearest": identity}


def test_identical_boxes_one_flipped_give_mirrored_pairs() -> None:
    a = view((10, 20, 100, 80), False, 64, 16)
    b = view((10, 20, 100, 80), True, 64, 16)
    mirror = [(r * 4 + c, r * 4 + 3 - c) for r in range(4) for c in range(4)]
    assert both_modes(a, b) == {"grid": mirror, "nearest": mirror}
    mirror_ba = sorted((b_, a_) for a_, b_ in mirror)
    assert both_modes(b, a) == {"grid": mirror_ba, "nearest": mirror_ba}


@pytest.mark.parametrize(
    "box_b",
    [(60, 60, 40, 40), (0, 50, 50, 50), (50, 0, 50, 50)],
    ids=["disjoint", "touching-right", "touching-below"],
)
def test_disjoint_or_touching_boxes_give_no_pairs(box_b: tuple[int, int, int, int]) -> None:
    a = view((0, 0, 50, 50), False, 32, 8)
    b = view(box_b, True, 32, 8)
    assert both_modes(a, b) == {"grid": [], "nearest": []}


def test_local_on_the_global_grid() -> None:
    """A local view covering exactly 6 x 6 patches of the global one, patches of equal size."""
    g = view((0, 0, 224, 224), False, 224, 16)
    local = view((32, 64, 96, 96), False, 96, 16)
    expected = [((2 + r) * 14 + 4 + c, r * 6 + c) for r in range(6) for c in range(6)]
    assert both_modes(g, local) == {"grid": expected, "nearest": expected}


def test_local_inside_global_grid_mode() -> None:
    """Non-square local box inside a global one, thinned columns, with and without a flip.

    Global (n = 14, 16 px patches): rows start round(14 * 40 / 224) = round(2.5) = 2 (half to
    even), count round(14 * 100 / 224) = 6; columns start round(3.125) = 3, count
    round(4.375) = 4. Local (n = 6): all 6 rows and 6 columns. Rows pair 2..7 with 0..5; columns
    keep k = 4 of the local's 6 at floor(j * 5 / 3) = 0, 1, 3, 5.
    """
    g = view((0, 0, 224, 224), False, 224, 16)
    local = view((40, 50, 100, 70), False, 96, 16)
    expected = [
        ((2 + r) * 14 + 3 + j, r * 6 + c) for r in range(6) for j, c in enumerate([0, 1, 3, 5])
    ]
    assert match_grid(g, local).pairs(0) == expected
    local_flipped = view((40, 50, 100, 70), True, 96, 16)
    expected = [
        ((2 + r) * 14 + 3 + j, r * 6 + c) for r in range(6) for j, c in enumerate([5, 4, 2, 0])
    ]
    assert match_grid(g, local_flipped).pairs(0) == expected


def test_non_square_box() -> None:
    """A is 100 x 50 px, B 100 x 100 px, both 4 x 4 patches.

    Grid: B keeps columns 0..1 of the overlap, A's 4 columns are thinned to 0 and 3.
    Nearest: B is coarser (25 x 25 vs 25 x 12.5 px patches); B's column centres x = 12.5, 37.5,
    62.5, 87.5 fall in A's cells 1, 3 (37.5 is the border of cells 2 and 3: the higher one is
    taken), 3, 3 whose centres 18.75, 43.75 are 0.25 B-patches away; the other two are 0.75 and
    1.75 away and dropped.
    """
    a = view((0, 0, 100, 50), False, 32, 8)
    b = view((0, 0, 100, 100), False, 32, 8)
    grid = [(r * 4 + ca, r * 4 + cb) for r in range(4) for ca, cb in ((0, 0), (3, 1))]
    nearest = [(r * 4 + ca, r * 4 + cb) for r in range(4) for ca, cb in ((1, 0), (3, 1))]
    assert both_modes(a, b) == {"grid": grid, "nearest": sorted(nearest)}
    assert match_nearest(a, b).pairs(0) == nearest  # in B's (the coarser view's) order


def test_grid_slice_cut_at_the_grid_edge() -> None:
    """Odd grid, overlap = right half of A's box: start round(1.5) = 2, count round(1.5) = 2.

    The slice 2 .. 4 is cut at the edge of A's 3 columns, leaving column 2 alone, paired with
    B's first column.
    """
    a = view((0, 0, 3, 2), False, 12, 4)
    b = view((0, 1, 3, 1), False, 12, 4)
    assert match_grid(a, b).pairs(0) == [(2, 0), (5, 3), (8, 6)]
    a_flipped = view((0, 0, 3, 2), True, 12, 4)
    assert match_grid(a_flipped, b).pairs(0) == [(0, 0), (3, 3), (6, 6)]


def test_nearest_threshold() -> None:
    """B shifted right by 3/4 of a 16 px patch.

    A's centres x = 8, 24, 40, 56 meet B's cells 0 (clamped), 0, 1, 2 with centres 20, 20, 36,
    52: 0.75, 0.25, 0.25 and 0.25 patches away.
    """
    a = view((0, 0, 64, 64), False, 32, 8)
    b = view((0, 12, 64, 64), False, 32, 8)
    kept = [(r * 4 + c, r * 4 + c - 1) for r in range(4) for c in (1, 2, 3)]
    assert match_nearest(a, b, 0.5).pairs(0) == kept
    assert match_nearest(a, b, 0.25).pairs(0) == kept
    assert match_nearest(a, b, 0.2).pairs(0) == []
    assert len(match_nearest(a, b, 0.75).pairs(0)) == 16
    assert match_nearest(a, b, 0.0).pairs(0) == []
    assert len(match_nearest(a, a, 0.0).pairs(0)) == 16


def test_batch_equals_single_samples_and_static_shapes() -> None:
    boxes_a = torch.tensor([[0, 0, 64, 64], [10, 5, 30, 40], [0, 0, 50, 50], [3, 7, 60, 20]])
    boxes_b = torch.tensor([[0, 0, 64, 64], [0, 0, 50, 50], [60, 60, 10, 10], [0, 0, 64, 64]])
    a = ViewGeometry(boxes_a.float(), torch.tensor([False, True, False, True]), 64, 8)
    b = ViewGeometry(boxes_b.double(), torch.tensor([True, False, False, True]), 32, 8)
    for mode, size in (("grid", 4 * 4), ("nearest", 8 * 8)):
        batch = match_patches(a, b, mode)
        for name in ("index_a", "index_b", "valid"):
            assert getattr(batch, name).shape == (4, size)
        assert batch.index_a.dtype == batch.index_b.dtype == torch.long
        assert batch.valid.dtype == torch.bool
        assert (batch.index_a[~batch.valid] == 0).all()
        assert (batch.index_b[~batch.valid] == 0).all()
        assert batch.counts[2] == 0
        for i in range(4):
            single = match_patches(a.select(i), b.select(i), mode)
            assert batch.pairs(i) == single.pairs(0)


def test_empty_batch() -> None:
    a = ViewGeometry(torch.zeros(0, 4), torch.zeros(0, dtype=torch.bool), 32, 8)
    for mode in MATCH_MODES:
        assert match_patches(a, a, mode).valid.shape[0] == 0


def test_compiles_without_graph_breaks() -> None:
    """Static output shapes: the matchers trace into one graph."""
    a = view((0, 0, 100, 50), False, 32, 8)
    b = view((0, 0, 100, 100), True, 16, 8)

    def run(boxes_a: torch.Tensor, boxes_b: torch.Tensor, flips: torch.Tensor) -> tuple:
        va = ViewGeometry(boxes_a, flips, 32, 8)
        vb = ViewGeometry(boxes_b, ~flips, 16, 8)
        grid, nearest = match_grid(va, vb), match_nearest(va, vb)
        return grid.index_a, grid.index_b, grid.valid, nearest.index_a, nearest.valid

    compiled = torch.compile(run, fullgraph=True, backend="eager")
    out = compiled(a.boxes, b.boxes, a.flipped)
    assert all(torch.equal(x, y) for x, y in zip(out, run(a.boxes, b.boxes, a.flipped)))


def test_errors() -> None:
    a = view((0, 0, 64, 64), False, 32, 8)
    two = ViewGeometry(torch.zeros(2, 4), torch.zeros(2, dtype=torch.bool), 32, 8)
    with pytest.raises(ValueError, match="valid modes are grid, nearest"):
        match_patches(a, a, "nearst")
    for mode in MATCH_MODES:
        with pytest.raises(ValueError, match="same batch size"):
            match_patches(a, two, mode)
        with pytest.raises(ValueError, match="same device"):
            match_patches(a, a.to("meta"), mode)
    for threshold in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            match_patches(a, a, "nearest", threshold)
