"""Label propagation: a slow per-patch reference, trivially easy cases, and the final masks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from patchdino.eval.video.propagation import (
    PropagationSettings,
    labels_to_mask,
    neighbourhood_mask,
    one_hot_labels,
    propagate_labels,
    propagate_sequence,
    sample_mask,
)

GRID = (5, 7)


def slow_propagate(
    target: torch.Tensor,
    feats: torch.Tensor,
    labels: torch.Tensor,
    grid: tuple[int, int],
    topk: int,
    radius: int,
    temperature: float,
) -> torch.Tensor:
    """Per target patch: affinities to allowed context patches, top-k, normalised label mix."""
    h, w = grid
    m, c = feats.shape[0], labels.shape[1]
    out = torch.zeros(c, h, w, dtype=torch.float64)
    for i in range(h * w):
        candidates = []
        for frame in range(m):
            for j in range(h * w):
                near = abs(i // w - j // w) <= radius and abs(i % w - j % w) <= radius
                if radius <= 0 or near:
                    dot = float(target[i].double() @ feats[frame, j].double())
                    candidates.append((math.exp(dot / temperature), frame, j))
        candidates.sort(key=lambda item: -item[0])
        kept = candidates[:topk]
        total = sum(a for a, _, _ in kept)
        for a, frame, j in kept:
            out[:, i // w, i % w] += a / total * labels[frame, :, j // w, j % w].double()
    return out


def unit(*shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


@pytest.mark.parametrize(("topk", "radius"), [(5, 12), (3, 1), (1, 0), (8, 2)])
def test_matches_a_slow_reference(topk: int, radius: int) -> None:
    n = GRID[0] * GRID[1]
    feats, target = unit(3, n, 6, seed=0), unit(n, 6, seed=1)
    labels = torch.rand(3, 4, *GRID, generator=torch.Generator().manual_seed(2))
    settings = PropagationSettings(topk=topk, neighbourhood=radius, temperature=0.3, chunk=8)
    got = propagate_labels(target, feats, labels, GRID, settings)
    expected = slow_propagate(target, feats, labels, GRID, topk, radius, 0.3)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_results() -> None:
    n = GRID[0] * GRID[1]
    feats, target = unit(2, n, 8, seed=3), unit(n, 8, seed=4)
    labels = one_hot_labels(torch.randint(0, 3, GRID), 3)[None].expand(2, -1, -1, -1)
    one = propagate_labels(target, feats, labels, GRID, PropagationSettings(chunk=1))
    whole = propagate_labels(target, feats, labels, GRID, PropagationSettings())
    torch.testing.assert_close(one, whole)


def test_neighbourhood_is_a_square_window() -> None:
    near = neighbourhood_mask(torch.tensor([0, 17]), GRID, 1)  # (0, 0) and (2, 3)
    assert near[0].reshape(GRID).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    window = near[1].reshape(GRID)
    assert window.sum() == 9 and window[1:4, 2:5].all()


def test_frames_identical_to_the_first_get_its_mask_back() -> None:
    n = GRID[0] * GRID[1]
    feats = torch.eye(n)  # every patch unlike every other
    mask = torch.randint(0, 4, GRID, generator=torch.Generator().manual_seed(5))
    first = one_hot_labels(mask, 4)
    outputs = list(propagate_sequence([feats] * 12, first, GRID))  # queue of 7 fills up
    assert len(outputs) == 11
    for labels in outputs:
        assert torch.equal(labels.argmax(0), mask)


def test_full_resolution_mask_of_an_identical_frame() -> None:
    # Horizontal bands aligned with the patch rows survive bilinear upsampling exactly; with
    # k = 1 each patch takes its own label alone, so the soft labels are one-hot.
    patch, grid = 4, (6, 5)
    rows = torch.tensor([0, 0, 2, 2, 1, 0])
    full = rows.repeat_interleave(patch)[:, None].expand(-1, grid[1] * patch)  # (24, 20)
    first = one_hot_labels(sample_mask(full, grid), 3)
    feats = unit(grid[0] * grid[1], 64, seed=6)
    (labels,) = propagate_sequence([feats, feats], first, grid, PropagationSettings(topk=1))
    assert torch.equal(labels, first)
    assert torch.equal(labels_to_mask(labels, tuple(full.shape)), full)


def test_sample_mask_takes_cell_centres() -> None:
    mask = torch.arange(8 * 12).reshape(8, 12)
    got = sample_mask(mask, (2, 3))  # centres (2, 2), (2, 6), (2, 10), (6, ...)
    assert got.tolist() == [[26, 30, 34], [74, 78, 82]]


def test_labels_to_mask_rescales_each_channel() -> None:
    labels = torch.zeros(2, 2, 2)
    labels[0] = 0.9
    labels[1, 0, 0] = 0.2  # weak, but the strongest of its channel
    labels[0, 0, 0] = 0.5  # weakest of channel 0
    assert labels_to_mask(labels, (2, 2)).tolist() == [[1, 0], [0, 0]]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="topk"):
        PropagationSettings(topk=0)
    with pytest.raises(ValueError, match="temperature"):
        PropagationSettings(temperature=0.0)
    assert list(propagate_sequence([], one_hot_labels(torch.zeros(GRID), 2), GRID)) == []
