"""Ranking metrics of image retrieval: average precision, mAP@R, R-precision, recall@k and the
revisited Oxford/Paris protocol.

Every function works on whole batches of queries at once. A ranking is a ``(Q, K)`` boolean
matrix ``ranked`` whose entry ``[q, i]`` says whether the database item ranked ``i``-th (0-based)
for query ``q`` is relevant. Rankings sort similarities in decreasing order with ties kept in
database order (a stable sort), so tied scores are not averaged as scikit-learn does.

:func:`search` computes rankings chunk by chunk, so that the ``(Q, N)`` similarity matrix of a
large database never has to be held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from patchdino.errors import InputError


class RetrievalInputError(InputError):
    """Features, labels or ground truth that cannot be ranked; the message says why."""


def rank(scores: Tensor) -> Tensor:
    """Database indices in decreasing score order, ties in database order.

    Args:
        scores: ``(Q, N)`` similarities.

    Returns:
        ``(Q, N)`` long indices.
    """
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def precision_at_hits(ranked: Tensor) -> Tensor:
    """Precision of the top ``i + 1`` items at every rank ``i`` that holds a relevant item.

    Args:
        ranked: ``(Q, K)`` bool relevance in ranking order.

    Returns:
        ``(Q, K)`` float32: ``hits[:i+1] / (i + 1)`` where ``ranked`` is True, else 0.
    """
    hits = ranked.float().cumsum(dim=1)  # (Q, K)
    positions = torch.arange(1, ranked.shape[1] + 1, device=ranked.device, dtype=torch.float32)
    return hits / positions * ranked


def ranked_average_precision(ranked: Tensor, num_relevant: Tensor) -> Tensor:
    """Average precision of rankings that hold every relevant item or a top part of them.

    Args:
        ranked: ``(Q, K)`` bool relevance in ranking order (``K`` may be less than the database:
            relevant items below it count as never retrieved).
        num_relevant: ``(Q,)`` number of relevant items of each query in the whole database.

    Returns:
        ``(Q,)`` float32 average precision in ``[0, 1]``; NaN for a query without relevant items.
    """
    total = precision_at_hits(ranked).sum(dim=1)  # (Q,)
    count = num_relevant.to(total)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, torch.nan))


def average_precision(scores: Tensor, relevant: Tensor) -> Tensor:
    """Average precision of each query over the whole database.

    Args:
        scores: ``(Q, N)`` similarities (higher is closer).
        relevant: ``(Q, N)`` bool, True where the database item is a right answer.

    Returns:
        ``(Q,)`` float32 average precision (scikit-learn's ``average_precision_score`` of each
        row when no scores tie); NaN for a query without relevant items.
    """
    _check_pair(scores, relevant)
    ranked = relevant.gather(1, rank(scores))  # (Q, N)
    return ranked_average_precision(ranked, relevant.sum(dim=1))


def mean_average_precision(scores: Tensor, relevant: Tensor) -> float:
    """Mean of :func:`average_precision` over the queries that have relevant items, in %."""
    ap = average_precision(scores, relevant)
    return _mean_percent(ap)


def precision_at_r(ranked: Tensor, num_relevant: Tensor) -> tuple[Tensor, Tensor]:
    """mAP@R and R-precision of each query, ``R`` being its number of relevant items.

    mAP@R averages, over the first ``R`` ranks, the precision at each relevant item (a miss
    counts 0) and divides by ``R``; R-precision is the share of relevant items among the first
    ``R``.

    Args:
        ranked: ``(Q, K)`` bool relevance in ranking order, ``K >= max(num_relevant)``.
        num_relevant: ``(Q,)`` ``R`` of each query.

    Returns:
        ``(Q,)`` float32 mAP@R and ``(Q,)`` float32 R-precision, NaN where ``R`` is 0.
    """
    r = num_relevant.long().to(ranked.device)
    longest = int(r.max()) if r.numel() else 0
    if longest > ranked.shape[1]:
        raise RetrievalInputError(
            f"rankings of {ranked.shape[1]} items are too short for R = {longest}"
        )
    positions = torch.arange(ranked.shape[1], device=ranked.device)  # (K,)
    within = ranked & (positions[None, :] < r[:, None])  # (Q, K)
    count = r.float()
    nan = torch.full_like(count, torch.nan)
    safe = count.clamp(min=1)
    map_at_r = precision_at_hits(within).sum(dim=1) / safe
    r_precision = within.float().sum(dim=1) / safe
    return torch.where(r > 0, map_at_r, nan), torch.where(r > 0, r_precision, nan)


def recall_at_k(ranked: Tensor, ks: Sequence[int]) -> dict[int, Tensor]:
    """Whether a relevant item is among the first ``k``, for each ``k`` (metric-learning
    Recall@k; top-1 retrieval accuracy for ``k = 1``).

    Args:
        ranked: ``(Q, K)`` bool relevance in ranking order, ``K >= max(ks)``.
        ks: cut-offs, each at least 1.

    Returns:
        ``{k: (Q,) float32 of 0 or 1}``.
    """
    if any(k < 1 or k > ranked.shape[1] for k in ks):
        raise RetrievalInputError(f"every k must lie in [1, {ranked.shape[1]}], got {list(ks)}")
    return {k: ranked[:, :k].any(dim=1).float() for k in ks}


def revisited_average_precision(scores: Tensor, positive: Tensor, junk: Tensor) -> Tensor:
    """Average precision of the revisited Oxford and Paris protocol.

    Junk items are taken out of each ranking (an item both positive and junk counts as
    positive); on what remains, with ``r_j`` the 0-based rank of the ``j``-th positive (0-based)
    and ``n`` the number of positives, the average precision is the trapezoidal rule of the
    benchmark's own evaluation::

        AP = sum_j ((j / r_j if r_j > 0 else 1) + (j + 1) / (r_j + 1)) / (2 n)

    Args:
        scores: ``(Q, N)`` similarities.
        positive: ``(Q, N)`` bool, the right answers of the setting (Medium: easy and hard;
            Hard: hard only).
        junk: ``(Q, N)`` bool, items ignored in the setting (Medium: junk; Hard: junk and easy).

    Returns:
        ``(Q,)`` float32 average precision in ``[0, 1]``; NaN for a query without positives.
    """
    _check_pair(scores, positive)
    _check_pair(scores, junk)
    order = rank(scores)  # (Q, N)
    ranked_pos = positive.gather(1, order)  # (Q, N)
    ranked_junk = junk.gather(1, order) & ~ranked_pos
    kept_rank = (~ranked_junk).long().cumsum(dim=1) - 1  # (Q, N): rank once junk is removed
    j = ranked_pos.long().cumsum(dim=1) - 1  # (Q, N): index among the positives
    r = kept_rank.float()
    jf = j.float()
    before = torch.where(r > 0, jf / r.clamp(min=1), torch.ones_like(r))
    after = (jf + 1) / (r + 1)
    # Only the positives' terms count (other entries may divide by zero).
    terms = torch.where(ranked_pos, before + after, torch.zeros_like(r))
    total = terms.sum(dim=1) / 2
    n = positive.sum(dim=1).float()
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(n, torch.nan))


RelevanceFn = Callable[[int, int, Tensor], Tensor]
"""``relevant(start, stop, indices)``: ``(q, K)`` bool relevance of the database items
``indices`` (``(q, K)`` long) ranked for the queries ``start:stop``."""


def search(
    queries: Tensor,
    database: Tensor,
    depth: int | None,
    relevant: RelevanceFn,
    chunk_size: int = 512,
    device: torch.device | str | None = None,
) -> Iterator[tuple[int, int, Tensor]]:
    """Rank the database for chunks of queries by dot product (cosine for unit vectors).

    Args:
        queries: ``(Q, D)`` query features.
        database: ``(N, D)`` database features.
        depth: ranks kept per query (None: the whole database).
        relevant: relevance of the ranked items (see :data:`RelevanceFn`).
        chunk_size: queries per matrix product.
        device: where to compute (default: the features' device).

    Yields:
        ``(start, stop, ranked)``: ``(stop - start, depth)`` bool relevance, on the CPU.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise RetrievalInputError(
            f"queries {tuple(queries.shape)} and database {tuple(database.shape)} must be "
            "(Q, D) and (N, D) features of one dimension"
        )
    if database.shape[0] == 0:
        raise RetrievalInputError("the database is empty")
    if chunk_size < 1:
        raise RetrievalInputError(f"the chunk size must be at least 1, got {chunk_size}")
    n = int(database.shape[0])
    k = n if depth is None else min(depth, n)
    target = queries.device if device is None else torch.device(device)
    base = database.to(target, torch.float32)
    for start in range(0, int(queries.shape[0]), chunk_size):
        stop = min(start + chunk_size, int(queries.shape[0]))
        scores = queries[start:stop].to(target, torch.float32) @ base.T  # (q, N)
        # (q, k) database indices, best first
        indices = rank(scores) if k == n else scores.topk(k, dim=1, sorted=True).indices
        yield start, stop, relevant(start, stop, indices).cpu()


@dataclass(frozen=True)
class LabelRetrieval:
    """Label-based retrieval scores, in %, averaged over the queries.

    Attributes:
        map_at_r: mean mAP@R.
        r_precision: mean R-precision.
        recall: Recall@k for each ``k`` (``recall[1]`` is top-1 retrieval accuracy).
        num_queries: queries scored (those with at least one relevant item).
    """

    map_at_r: float
    r_precision: float
    recall: dict[int, float]
    num_queries: int


def label_retrieval(
    queries: Tensor,
    query_labels: Tensor,
    database: Tensor,
    database_labels: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 512,
    device: torch.device | str | None = None,
) -> LabelRetrieval:
    """Each query ranks the database; items of its class are the relevant ones.

    Args:
        queries: ``(Q, D)`` features, L2-normalised for cosine similarity.
        query_labels: ``(Q,)`` class indices.
        database: ``(N, D)`` features.
        database_labels: ``(N,)`` class indices, numbered as the queries'.
        ks: cut-offs of Recall@k.
        chunk_size: queries per matrix product.
        device: where to compute.

    Raises:
        RetrievalInputError: shapes that disagree, an empty database, a ``k`` beyond it, or no
            query whose class the database holds.
    """
    if query_labels.shape != queries.shape[:1] or database_labels.shape != database.shape[:1]:
        raise RetrievalInputError("there must be one label per feature vector")
    if database.shape[0] == 0:
        raise RetrievalInputError("the database is empty")
    db_labels = database_labels.long()
    q_labels = query_labels.long()
    if q_labels.numel() == 0:
        raise RetrievalInputError("there are no queries")
    classes = max(int(db_labels.max()), int(q_labels.max())) + 1
    per_class = torch.bincount(db_labels.clamp(min=0), minlength=classes)  # (C,)
    num_relevant = torch.where(q_labels >= 0, per_class[q_labels.clamp(min=0)], 0)  # (Q,)
    if not bool((num_relevant > 0).any()):
        raise RetrievalInputError("no query has a class that the database holds")
    depth = max(int(num_relevant.max()), max(ks))
    if max(ks) > database.shape[0]:
        raise RetrievalInputError(
            f"Recall@{max(ks)} needs at least {max(ks)} database images, got {database.shape[0]}"
        )
    target = queries.device if device is None else torch.device(device)
    lookup = db_labels.to(target)
    q_target = q_labels.to(target)

    def same_class(start: int, stop: int, indices: Tensor) -> Tensor:
        return lookup[indices] == q_target[start:stop, None]

    maps, precisions = [], []
    recalls: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start, stop, ranked in search(queries, database, depth, same_class, chunk_size, target):
        m, p = precision_at_r(ranked, num_relevant[start:stop])
        maps.append(m)
        precisions.append(p)
        for k, hit in recall_at_k(ranked, ks).items():
            recalls[k].append(hit)
    scored = num_relevant > 0
    return LabelRetrieval(
        map_at_r=_mean_percent(torch.cat(maps)),
        r_precision=_mean_percent(torch.cat(precisions)),
        recall={k: _mean_percent(torch.cat(v)[scored]) for k, v in recalls.items()},
        num_queries=int(scored.sum()),
    )


def _mean_percent(values: Tensor) -> float:
    """Mean of the finite entries of ``values`` times 100 (NaN when there are none)."""
    kept = values[~torch.isnan(values)]
    return float(kept.mean() * 100) if kept.numel() else float("nan")


def _check_pair(scores: Tensor, mask: Tensor) -> None:
    if scores.ndim != 2 or mask.shape != scores.shape or mask.dtype != torch.bool:
        raise RetrievalInputError(
            f"scores {tuple(scores.shape)} need a boolean mask of the same (Q, N) shape, got "
            f"{tuple(mask.shape)} {mask.dtype}"
        )
