"""J and F against slow direct computations and hand-made masks with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from patchdino.eval.video.video_metrics import (
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    frame_scores,
    region_similarity,
    score_sequence,
)


def slow_iou(pred: torch.Tensor, true: torch.Tensor) -> float:
    inter = union = 0
    for a, b in zip(pred.flatten().tolist(), true.flatten().tolist(), strict=True):
        inter += int(a and b)
        union += int(a or b)
    return 1.0 if union == 0 else inter / union


def slow_boundary(mask: torch.Tensor) -> set[tuple[int, int]]:
    """Pixels differing from their right, lower or lower-right neighbour (inside the image)."""
    h, w = mask.shape
    found = set()
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                ny, nx = min(y + dy, h - 1), min(x + dx, w - 1)
                if bool(mask[y, x]) != bool(mask[ny, nx]):
                    found.add((y, x))
    return found


def slow_f(pred: torch.Tensor, true: torch.Tensor, radius: float) -> float:
    """Boundary F-measure from the Euclidean distance of each boundary pixel to the other set."""
    a, b = slow_boundary(pred), slow_boundary(true)
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0

    def matched(src: set[tuple[int, int]], dst: set[tuple[int, int]]) -> int:
        return sum(1 for p in src if min(math.dist(p, q) for q in dst) <= radius + 1e-9)

    precision, recall = matched(a, b) / len(a), matched(b, a) / len(b)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def blobs(seed: int, count: int, size: int = 12) -> torch.Tensor:
    """``(count, size, size)`` bool masks of random rectangles and noise."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, size, size, generator=gen) > 0.85
    for i in range(count):
        y, x = torch.randint(0, size - 4, (2,), generator=gen).tolist()
        masks[i, y : y + 4, x : x + 5] = True
    return masks


def test_region_similarity_equals_a_plain_loop() -> None:
    pred, true = blobs(0, 6), blobs(1, 6)
    got = region_similarity(pred, true)
    for i in range(6):
        assert got[i].item() == pytest.approx(slow_iou(pred[i], true[i]))
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert region_similarity(empty, empty).item() == 1.0


def test_boundary_map_equals_the_definition() -> None:
    for mask in blobs(2, 4):
        got = {tuple(p) for p in boundary_map(mask).nonzero().tolist()}
        assert got == slow_boundary(mask)


@pytest.mark.parametrize("radius", [0, 1, 2, 3])
def test_f_measure_equals_boundary_distances(radius: int) -> None:
    pred, true = blobs(3, 5), blobs(4, 5)
    got = boundary_f_measure(pred, true, tolerance=radius if radius else 0.0)
    for i in range(5):
        assert got[i].item() == pytest.approx(slow_f(pred[i], true[i], radius))


def test_f_measure_known_answers() -> None:
    true = torch.zeros(10, 10, dtype=torch.bool)
    true[:5] = True  # boundary: row 4, 10 pixels
    shifted = torch.zeros_like(true)
    shifted[:7] = True  # boundary: row 6
    assert boundary_f_measure(shifted, true, tolerance=1).item() == 0.0
    assert boundary_f_measure(shifted, true, tolerance=2).item() == 1.0
    bump = true.clone()
    bump[5, 0] = True  # boundary: row 4 and (5, 0): 10 of 11 pixels match exactly
    assert boundary_f_measure(bump, true, tolerance=0.0).item() == pytest.approx(20 / 21)
    empty = torch.zeros_like(true)
    assert boundary_f_measure(empty, empty).item() == 1.0
    assert boundary_f_measure(empty, true).item() == 0.0
    assert boundary_f_measure(true, empty).item() == 0.0


def test_davis_tolerance_radius() -> None:
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius(84, 112) == 2
    assert boundary_radius(100, 100, tolerance=3) == 3


def test_sequence_skips_first_and_last_frames() -> None:
    true = torch.zeros(4, 8, 8, dtype=torch.long)
    true[:, 2:6, 2:6] = 1
    true[:, 0, :] = 2
    pred = true.clone()
    pred[0] = 0
    pred[3] = 0
    scores = score_sequence(pred, true, [1, 2])
    assert scores.frames == 2 and scores.objects == (1, 2)
    assert scores.j == (1.0, 1.0) and scores.f == (1.0, 1.0) and scores.jf_mean == 1.0
    pred[1, 2:6, 2:4] = 0  # object 1 half gone in a scored frame
    j, _ = frame_scores(pred[1], true[1], [1, 2])
    assert j.tolist() == [0.5, 1.0]
    assert score_sequence(pred, true, [1, 2]).j == (0.75, 1.0)
    assert math.isnan(score_sequence(pred[:2], true[:2], [1]).j_mean)
