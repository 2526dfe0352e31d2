"""Copy detection: which database image is each query a copy of.

The ground truth is a JSON object mapping each query file (its path relative to the queries
folder) to the name of its original, or a list of names when several database images count
as originals. Database images are named by their path relative to their split's folder
(``"a/img1.jpg"``) or, in data sets held in memory (IDX, CIFAR), by their index in the split
(``"4821"``). Every check runs before any image is encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from patchdino.errors import InputError
from patchdino.eval.retrieval.retrieval_metrics import ranked_average_precision, recall_at_k, search


class GroundTruthError(InputError):
    """A copy-detection ground truth that is missing, malformed or does not fit the data."""


def read_ground_truth(path: str | Path) -> dict[str, list[str]]:
    """Read a copy-detection ground truth: ``{query: original or [originals]}``.

    Raises:
        GroundTruthError: a missing or unreadable file, or entries of the wrong form.
    """
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"ground-truth file {path} does not exist")
    try:
        tree = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GroundTruthError(f"ground-truth file {path} is not readable JSON: {err}") from err
    if not isinstance(tree, dict) or not tree:
        raise GroundTruthError(f"{path} must hold a non-empty JSON object {{query: original}}")
    truth: dict[str, list[str]] = {}
    for query, originals in tree.items():
        values = [originals] if isinstance(originals, str) else originals
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) for v in values)
        ):
            raise GroundTruthError(
                f"{path}: query {query!r} must map to a file name or a non-empty list of them"
            )
        truth[query] = list(values)
    return truth


def relevance_pairs(
    query_names: list[str], database_names: list[str], truth: dict[str, list[str]]
) -> Tensor:
    """``(P, 2)`` long ``[query index, database index]`` of every (query, original) pair.

    Raises:
        GroundTruthError: a query the ground truth does not list, or an original that is not in
            the database (the message names the first few).
    """
    if not query_names:
        raise GroundTruthError("the queries folder holds no images")
    if not database_names:
        raise GroundTruthError("the database holds no images")
    missing = [q for q in query_names if q not in truth]
    if missing:
        raise GroundTruthError(
            f"{len(missing)} of {len(query_names)} queries are not in the ground truth, e.g. "
            f"{', '.join(missing[:3])}"
        )
    index = {name: i for i, name in enumerate(database_names)}
    pairs, absent = [], []
    for q, name in enumerate(query_names):
        for original in truth[name]:
            if original in index:
                pairs.append((q, index[original]))
            else:
                absent.append(original)
    if absent:
        raise GroundTruthError(
            f"{len(absent)} originals of the ground truth are not in the database, e.g. "
            f"{', '.join(absent[:3])} (database images are named like "
            f"{', '.join(database_names[:2])})"
        )
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


@dataclass(frozen=True)
class CopyDetection:
    """Copy-detection scores in %.

    Attributes:
        map: mean average precision over the queries.
        top1: share of queries whose nearest database image is an original.
        recall: Recall@k for each ``k`` (an original among the ``k`` nearest).
        num_queries: queries scored.
        num_database: database images.
    """

    map: float
    top1: float
    recall: dict[int, float]
    num_queries: int
    num_database: int


def detect_copies(
    queries: Tensor,
    database: Tensor,
    pairs: Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int = 256,
    device: torch.device | str | None = None,
) -> CopyDetection:
    """Rank the whole database for each query by cosine similarity and score the originals.

    Args:
        queries: ``(Q, D)`` unit-vector descriptors.
        database: ``(N, D)`` unit-vector descriptors.
        pairs: ``(P, 2)`` ``[query, database]`` indices of the originals
            (:func:`relevance_pairs`); every query needs at least one.
        ks: cut-offs of Recall@k (those above ``N`` are dropped; 1 is always scored).
        chunk_size: queries ranked at once.
        device: where to compute.
    """
    num_q, num_n = int(queries.shape[0]), int(database.shape[0])
    truth = torch.zeros(num_q, num_n, dtype=torch.bool)  # (Q, N)
    truth[pairs[:, 0], pairs[:, 1]] = True
    num_relevant = truth.sum(dim=1)  # (Q,)
    if bool((num_relevant == 0).any()):
        raise GroundTruthError("every query needs at least one original in the database")
    kept = tuple(sorted({1, *(k for k in ks if 1 <= k <= num_n)}))
    target = queries.device if device is None else torch.device(device)
    truth_on = truth.to(target)

    def is_original(start: int, stop: int, indices: Tensor) -> Tensor:
        return truth_on[start:stop].gather(1, indices)

    aps: list[Tensor] = []
    hits: dict[int, list[Tensor]] = {k: [] for k in kept}
    for start, stop, ranked in search(queries, database, None, is_original, chunk_size, target):
        aps.append(ranked_average_precision(ranked, num_relevant[start:stop]))
        for k, hit in recall_at_k(ranked, kept).items():
            hits[k].append(hit)
    recall = {k: float(torch.cat(v).mean() * 100) for k, v in hits.items()}
    return CopyDetection(
        map=float(torch.cat(aps).mean() * 100),
        top1=recall[1],
        recall=recall,
        num_queries=num_q,
        num_database=num_n,
    )
