"""KoLeo against a loop written from its definition (DINOv2's KoLeoLoss)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from patchdino.losses.terms import koleo


def koleo_by_loops(x: Tensor, eps: float = 1e-8) -> float:
    """``-1/B sum_i log(min_{j != i} ||x_i - x_j|| + eps)`` on L2-normalised rows."""
    rows = [[v / max(math.sqrt(sum(u * u for u in r)), eps) for v in r] for r in x.tolist()]
    total = 0.0
    for i, a in enumerate(rows):
        best, nearest = -math.inf, -1
        for j, b in enumerate(rows):
            if j != i and sum(p * q for p, q in zip(a, b)) > best:
                best, nearest = sum(p * q for p, q in zip(a, b)), j
        distance = math.sqrt(sum((p - q + eps) ** 2 for p, q in zip(a, rows[nearest])))
        total += -math.log(distance + eps)
    return total / len(rows)


@pytest.mark.parametrize(("rows", "dim"), [(2, 3), (7, 5), (16, 32)])
def test_koleo_matches_the_definition(rows: int, dim: int) -> None:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows), dtype=torch.float64)
    assert float(koleo(x)) == pytest.approx(koleo_by_loops(x), rel=1e-10)


def test_koleo_pushes_the_nearest_points_apart() -> None:
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.0]], dtype=torch.float64)
    x.requires_grad_()
    koleo(x).backward()
    assert x.grad is not None
    # Stepping against the gradient moves the two close points apart.
    after = (x - 0.1 * x.grad).detach()
    assert torch.dist(after[0], after[1]) > torch.dist(x[0].detach(), x[1].detach())


def test_koleo_needs_two_points() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        koleo(torch.randn(1, 4))
