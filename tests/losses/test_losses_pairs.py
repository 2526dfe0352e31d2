"""Pair plan: selected rows, sample-major order and partner weights on a hand-made batch."""

from __future__ import annotations

import pytest
import torch

from patchdino.losses.pairs import plan_pairs, view_pairs
from patchdino.matching.types import PatchMatches


def _matches(pairs: list[list[tuple[int, int]]], k: int = 3) -> PatchMatches:
    """One row per sample, padded to ``k`` with index 0 and valid False."""
    index_a = torch.zeros(len(pairs), k, dtype=torch.long)
    index_b = torch.zeros(len(pairs), k, dtype=torch.long)
    valid = torch.zeros(len(pairs), k, dtype=torch.bool)
    for b, row in enumerate(pairs):
        for j, (a, c) in enumerate(row):
            index_a[b, j], index_b[b, j], valid[b, j] = a, c, True
    return PatchMatches(index_a, index_b, valid)


def test_view_pairs() -> None:
    assert view_pairs(2, 3) == [(0, 1), (0, 2), (1, 0), (1, 2)]
    assert view_pairs(2, 4, local_local=True)[-2:] == [(2, 3), (3, 2)]


def test_hand_made_plan() -> None:
    # Two samples, views: global 0 and 1 (4 patches each), local 2 (1 patch).
    matches = {
        (0, 1): _matches([[(3, 0), (1, 2)], []]),
        (0, 2): _matches([[], [(2, 0)]]),
        (1, 2): _matches([[(0, 0)], []]),
    }  # (1, 0) is given as (0, 1)
    plan = plan_pairs(matches, [5, 5, 2], batch_size=2, num_global=2)
    assert plan.view_pairs == [(0, 1), (0, 2), (1, 0), (1, 2)]
    scale = 1.0 / (2 * 4)
    patch = plan.patch
    assert patch is not None
    # Student rows, sample-major: sample 0 -> view 0 patches 1, 3 (from the swapped pair
    # (1, 0)); view 1 patches 0, 2; view 2 patch 0; sample 1 -> view 2 patch 0.
    student = patch.student
    assert student.sample_offsets == [0, 5, 6]
    assert student.positions.tolist() == [2, 4, 1, 3, 1, 1]
    # Teacher rows: sample 0 -> view 0 patches 1, 3; view 1 patches 0, 2 (patch 0 is used by
    # pairs (1, 0) and (1, 2) but selected once); sample 1 -> view 0 patch 2.
    teacher = patch.teacher
    assert teacher.sample_offsets == [0, 4, 5]
    assert teacher.positions.tolist() == [2, 4, 1, 3, 3]
    partners = {
        (r, int(p)): float(w)
        for r in range(6)
        for p, w in zip(patch.partners[r], patch.weights[r])
        if w > 0
    }
    w01 = scale / 3  # sample 0, pairs (0, 1) and (1, 0): CLS + 2 patches
    assert partners == pytest.approx(
        {
            (0, 3): w01,  # student view 0 patch 1 <- teacher view 1 patch 2
            (1, 2): w01,  # student view 0 patch 3 <- teacher view 1 patch 0
            (2, 1): w01,  # student view 1 patch 0 <- teacher view 0 patch 3
            (3, 0): w01,  # student view 1 patch 2 <- teacher view 0 patch 1
            (4, 2): scale / 2,  # student view 2 patch 0 <- teacher view 1 patch 0
            (5, 4): scale / 2,  # sample 1: student view 2 patch 0 <- teacher view 0 patch 2
        }
    )
    # CLS: student (b, v) rows b * 3 + v; local CLS rows have two partners.
    cls = plan.cls
    assert cls.student.sample_offsets == [0, 3, 6]
    assert cls.teacher.sample_offsets == [0, 2, 4]
    cls_w = cls.weights[2].tolist()  # sample 0, student view 2: pairs (0, 2) and (1, 2)
    assert cls_w == pytest.approx([scale / 1, scale / 2])
    torch.testing.assert_close(plan.matched_patches, torch.tensor(6 / 8, dtype=torch.float64))
