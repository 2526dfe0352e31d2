"""Retrieval metrics against scikit-learn and against plain per-query computations."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score

from patchdino.eval.retrieval.retrieval_metrics import (
    RetrievalInputError,
    average_precision,
    label_retrieval,
    mean_average_precision,
    precision_at_r,
    rank,
    recall_at_k,
    revisited_average_precision,
)


def _random_problem(seed: int, q: int = 6, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(q, n, generator=gen)
    relevant = torch.rand(q, n, generator=gen) < 0.2
    relevant[:, 0] = True  # every query has a right answer
    return scores, relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn(seed: int) -> None:
    scores, relevant = _random_problem(seed)
    ap = average_precision(scores, relevant)
    expected = [average_precision_score(r.numpy(), s.numpy()) for s, r in zip(scores, relevant)]
    assert ap.tolist() == pytest.approx(expected, abs=1e-6)
    assert mean_average_precision(scores, relevant) == pytest.approx(
        100 * sum(expected) / len(expected), abs=1e-4
    )


def test_query_without_relevant_items_is_left_out() -> None:
    scores, relevant = _random_problem(3, q=3)
    relevant[1] = False
    ap = average_precision(scores, relevant)
    assert math.isnan(float(ap[1]))
    kept = [average_precision_score(relevant[i].numpy(), scores[i].numpy()) for i in (0, 2)]
    assert mean_average_precision(scores, relevant) == pytest.approx(50 * sum(kept), abs=1e-4)


def _reference_at_r(ranked: list[bool], r: int) -> tuple[float, float]:
    hits, total = 0, 0.0
    for i, rel in enumerate(ranked[:r]):
        if rel:
            hits += 1
            total += hits / (i + 1)
    return total / r, hits / r


def test_map_at_r_r_precision_and_recall_match_a_plain_loop() -> None:
    scores, relevant = _random_problem(4, q=8, n=30)
    ranked = relevant.gather(1, rank(scores))
    num_relevant = relevant.sum(dim=1)
    map_at_r, r_precision = precision_at_r(ranked, num_relevant)
    recall = recall_at_k(ranked, [1, 3])
    for q in range(scores.shape[0]):
        row = ranked[q].tolist()
        want_map, want_prec = _reference_at_r(row, int(num_relevant[q]))
        assert float(map_at_r[q]) == pytest.approx(want_map, abs=1e-6)
        assert float(r_precision[q]) == pytest.approx(want_prec, abs=1e-6)
        assert float(recall[1][q]) == float(row[0])
        assert float(recall[3][q]) == float(any(row[:3]))


def test_label_retrieval_in_chunks_equals_the_dense_computation() -> None:
    gen = torch.Generator().manual_seed(5)
    database = torch.nn.functional.normalize(torch.randn(50, 8, generator=gen), dim=1)
    db_labels = torch.arange(50) % 4
    queries = torch.nn.functional.normalize(torch.randn(9, 8, generator=gen), dim=1)
    q_labels = torch.arange(9) % 4
    result = label_retrieval(queries, q_labels, database, db_labels, ks=(1, 5), chunk_size=2)
    relevant = q_labels[:, None] == db_labels[None, :]
    ranked = relevant.gather(1, rank(queries @ database.T))
    map_at_r, r_precision = precision_at_r(ranked, relevant.sum(dim=1))
    assert result.map_at_r == pytest.approx(float(map_at_r.mean() * 100), abs=1e-4)
    assert result.r_precision == pytest.approx(float(r_precision.mean() * 100), abs=1e-4)
    assert result.recall[5] == pytest.approx(float(ranked[:, :5].any(1).float().mean() * 100))
    assert result.num_queries == 9


def test_label_retrieval_refuses_bad_input() -> None:
    feats = torch.eye(3)
    with pytest.raises(RetrievalInputError, match="empty"):
        label_retrieval(feats, torch.zeros(3), feats[:0], torch.zeros(0))
    with pytest.raises(RetrievalInputError, match="no query has a class"):
        label_retrieval(feats, torch.full((3,), 2), feats, torch.zeros(3))


def test_revisited_junk_on_a_hand_made_ranking() -> None:
    # Database items ranked 0, 1, ..., 5; positives 1 and 4; junk 0 and 3.
    scores = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    positive = torch.zeros(1, 6, dtype=torch.bool)
    positive[0, [1, 4]] = True
    junk = torch.zeros(1, 6, dtype=torch.bool)
    junk[0, [0, 3]] = True
    # Without the junk the ranking is 1, 2, 4, 5: positives at ranks 0 and 2, so
    # AP = ((1 + 1/1) + (1/2 + 2/3)) / (2 * 2) = 19/24.
    ap = revisited_average_precision(scores, positive, junk)
    assert float(ap[0]) == pytest.approx(19 / 24)
    # Junk left in: positives at ranks 1 and 4, AP = ((0 + 1/2) + (1/4 + 2/5)) / 4.
    none = torch.zeros_like(junk)
    assert float(revisited_average_precision(scores, positive, none)[0]) == pytest.approx(
        (0.5 + 0.25 + 0.4) / 4
    )
    # An item both positive and junk counts as positive.
    both = junk.clone()
    both[0, 1] = True
    assert float(revisited_average_precision(scores, positive, both)[0]) == pytest.approx(19 / 24)
    # No positives: NaN, left out of the mean by the callers.
    assert math.isnan(float(revisited_average_precision(scores, none, junk)[0]))
