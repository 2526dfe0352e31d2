"""Copy-detection ground truth, names and scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from patchdino.eval.retrieval.copy_detection import (
    GroundTruthError,
    detect_copies,
    read_ground_truth,
    relevance_pairs,
)


def test_read_ground_truth_accepts_names_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"q1.jpg": "a.jpg", "q2.jpg": ["b.jpg", "c.jpg"]}))
    assert read_ground_truth(path) == {"q1.jpg": ["a.jpg"], "q2.jpg": ["b.jpg", "c.jpg"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not readable JSON"),
        ("[]", "non-empty JSON object"),
        ('{"q": []}', "must map to a file name"),
        ('{"q": [1]}', "must map to a file name"),
    ],
)
def test_read_ground_truth_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "gt.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(GroundTruthError, match=message):
        read_ground_truth(path)


def test_relevance_pairs_and_their_errors() -> None:
    truth = {"q1": ["b"], "q2": ["a", "c"]}
    pairs = relevance_pairs(["q2", "q1"], ["a", "b", "c"], truth)
    assert pairs.tolist() == [[0, 0], [0, 2], [1, 1]]
    with pytest.raises(
        GroundTruthError, match=r"1 of 2 queries are not in the ground truth, e\.g\. q3"
    ):
        relevance_pairs(["q1", "q3"], ["a", "b"], truth)
    with pytest.raises(GroundTruthError, match=r"not in the database, e\.g\. c"):
        relevance_pairs(["q2"], ["a", "b"], truth)
    with pytest.raises(GroundTruthError, match="database holds no images"):
        relevance_pairs(["q1"], [], truth)


def test_scores_match_sklearn() -> None:
    gen = torch.Generator().manual_seed(0)
    database = torch.nn.functional.normalize(torch.randn(30, 5, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(7, 5, generator=gen), dim=1)
    pairs = torch.tensor([[q, (3 * q) % 30] for q in range(7)] + [[0, 11], [4, 29]])
    result = detect_copies(queries, database, pairs, ks=(1, 5), chunk_size=3)
    scores = queries @ database.T
    relevant = torch.zeros(7, 30, dtype=torch.bool)
    relevant[pairs[:, 0], pairs[:, 1]] = True
    aps = [average_precision_score(r.numpy(), s.numpy()) for s, r in zip(scores, relevant)]
    assert result.map == pytest.approx(100 * sum(aps) / 7, abs=1e-4)
    top1 = relevant.gather(1, scores.argmax(dim=1, keepdim=True)).float().mean() * 100
    assert result.top1 == pytest.approx(float(top1))
    assert result.num_queries == 7 and result.num_database == 30 and set(result.recall) == {1, 5}


def test_exact_copies_are_found() -> None:
    database = torch.eye(6)
    result = detect_copies(database[[4, 2]], database, torch.tensor([[0, 4], [1, 2]]))
    assert result.map == 100 and result.top1 == 100
