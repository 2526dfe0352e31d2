"""Weighted k-nearest-neighbour classification on frozen features (DINO's k-NN protocol).

Every test feature (query) is compared with every train feature (the memory bank) by cosine
similarity. The ``k`` most similar train samples vote for their label with weight
``exp(s / T)``, where ``s`` is their similarity and ``T`` the temperature; the class with the
largest total vote is the prediction (Wu et al. 2018; Caron et al. 2021, arXiv 2104.14294).

The similarity matrix is never built whole: queries are processed in chunks of ``chunk_size``
and, within a chunk, the memory bank in chunks of ``memory_chunk_size``, keeping a running top-k
that is merged with each memory chunk's own top-k. Peak extra memory is
``O(chunk_size * (memory_chunk_size + max(ks)) + chunk_size * num_classes)``, so a 1.28M-sample
bank and 50k queries fit in a few GB.

:func:`~patchdino.eval.common.pixels.pixel_features` gives the raw-pixel baseline features for
the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class KNNResult:
    """Outcome of :func:`knn_classify`.

    Attributes:
        top1: top-1 accuracy in percent for each ``k``; empty when no test labels were given.
        top5: top-5 accuracy in percent for each ``k``; empty when no test labels were given.
            Counted as ``top5`` of :func:`knn_classify` says (by default a class that
            received no vote is never a hit, so with fewer than five voting classes the
            metric does not depend on how ties are broken).
        predictions: ``(M,)`` long CPU tensor of predicted classes for each ``k``.
    """

    top1: dict[int, float] = field(default_factory=dict)
    top5: dict[int, float] = field(default_factory=dict)
    predictions: dict[int, Tensor] = field(default_factory=dict)


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor | None = None,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    memory_chunk_size: int = 65536,
    normalize: bool = True,
    device: torch.device | str | None = None,
    top5: str = "voted",
) -> KNNResult:
    """Classify test features by a similarity-weighted vote of their nearest train features.

    Args:
        train_features: ``(N, D)`` memory bank, any floating dtype, on any device.
        train_labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        test_features: ``(M, D)`` queries.
        test_labels: ``(M,)`` integer labels, or None to get predictions only.
        ks: numbers of neighbours to evaluate; each must be in ``[1, N]``. One top-k search
            with ``max(ks)`` serves them all.
        temperature: ``T`` in the vote weight ``exp(s / T)``.
        num_classes: number of classes; inferred from the largest label when None.
        chunk_size: queries processed at once.
        memory_chunk_size: memory-bank rows compared with a query chunk at once.
        normalize: L2-normalise both feature sets first, so that ``s`` is the cosine
            similarity. With False, ``s`` is the raw dot product.
        device: where to compute; defaults to the device of ``train_features``. The bank is
            moved there once, in its own dtype; chunks are cast to float32 on the fly.
        top5: how a top-5 hit is counted: ``"voted"`` (the true class is among the five
            highest vote totals and got a vote) or ``"dino"`` (DINO's ``knn_classifier``:
            among the first ``min(5, k)`` classes of all scores sorted, voted or not, ties
            by the lower class index); see
            :data:`~patchdino.eval.classification.options.TOP5_CONVENTIONS`.

    Returns:
        A :class:`KNNResult` with accuracies (when ``test_labels`` is given) and predictions
        for every ``k``, all on the CPU.

    Raises:
        ValueError: on mismatched shapes, empty inputs, labels out of range, or a bad ``k``,
            temperature, chunk size or ``top5``.
    """
    from patchdino.eval.classification.options import TOP5_CONVENTIONS

    if top5 not in TOP5_CONVENTIONS:
        raise ValueError(f"top5 must be one of {', '.join(TOP5_CONVENTIONS)}, got {top5!r}")
    _check_inputs(train_features, train_labels, test_features, test_labels)
    ks = sorted({int(k) for k in ks})
    num_train = train_features.shape[0]
    if not ks or ks[0] < 1 or ks[-1] > num_train:
        raise ValueError(f"every k must be in [1, {num_train}] (the train set size), got {ks}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if chunk_size < 1 or memory_chunk_size < 1:
        raise ValueError(
            f"chunk sizes must be positive, got chunk_size={chunk_size}, "
            f"memory_chunk_size={memory_chunk_size}"
        )
    num_classes = _resolve_num_classes(train_labels, test_labels, num_classes)

    device = torch.device(device) if device is not None else train_features.device
    bank = train_features.to(device)
    bank_labels = train_labels.to(device=device, dtype=torch.long)
    kmax = ks[-1]

    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    hits1 = dict.fromkeys(ks, 0)
    hits5 = dict.fromkeys(ks, 0)
    for start in range(0, test_features.shape[0], chunk_size):
        queries = _prepare(test_features[start : start + chunk_size], device, normalize)
        sims, idx = _topk_over_bank(queries, bank, kmax, memory_chunk_size, normalize)
        neighbour_labels = bank_labels[idx]  # (q, kmax)
        # Subtracting each query's best similarity rescales its votes by a positive constant:
        # the ranking is unchanged and exp() cannot overflow on unnormalised features.
        weights = torch.exp((sims - sims[:, :1]) / temperature)  # (q, kmax)
        chunk_labels = None
        if test_labels is not None:
            chunk_labels = test_labels[start : start + chunk_size].to(device, torch.long)
        for k in ks:
            votes = torch.zeros(queries.shape[0], num_classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])  # (q, C)
            pred = votes.argmax(dim=1)
            predictions[k].append(pred.cpu())
            if chunk_labels is not None:
                hits1[k] += int((pred == chunk_labels).sum())
                if top5 == "voted":
                    best5 = votes.topk(min(5, num_classes), dim=1).indices  # (q, 5)
                    in_top5 = (best5 == chunk_labels[:, None]).any(dim=1)
                    voted = votes.gather(1, chunk_labels[:, None]).squeeze(1) > 0
                    hits5[k] += int((in_top5 & voted).sum())
                else:  # DINO: the first min(5, k) of all classes sorted by their votes
                    order = votes.sort(dim=1, descending=True, stable=True).indices
                    first = order[:, : min(5, k, num_classes)]
                    hits5[k] += int((first == chunk_labels[:, None]).any(dim=1).sum())

    accuracy1: dict[int, float] = {}
    accuracy5: dict[int, float] = {}
    if test_labels is not None:
        num_test = test_features.shape[0]
        accuracy1 = {k: 100.0 * hits1[k] / num_test for k in ks}
        accuracy5 = {k: 100.0 * hits5[k] / num_test for k in ks}
    return KNNResult(
        top1=accuracy1,
        top5=accuracy5,
        predictions={k: torch.cat(p) for k, p in predictions.items()},
    )


def _prepare(features: Tensor, device: torch.device, normalize: bool) -> Tensor:
    """``(n, D)`` chunk as float32 on ``device``, L2-normalised if asked."""
    features = features.to(device=device, dtype=torch.float32)
    return F.normalize(features, dim=1) if normalize else features


def _topk_over_bank(
    queries: Tensor, bank: Tensor, k: int, memory_chunk_size: int, normalize: bool
) -> tuple[Tensor, Tensor]:
    """Top-``k`` similarities of ``queries`` ``(q, D)`` over ``bank`` ``(N, D)``, chunk by chunk.

    Returns:
        ``(q, k)`` similarities in decreasing order and ``(q, k)`` long indices into the bank.
    """
    best_sims: Tensor | None = None
    best_idx: Tensor | None = None
    for start in range(0, bank.shape[0], memory_chunk_size):
        keys = _prepare(bank[start : start + memory_chunk_size], queries.device, normalize)
        sims = queries @ keys.T  # (q, m)
        sims, idx = sims.topk(min(k, sims.shape[1]), dim=1)  # (q, <=k)
        idx = idx + start
        if best_sims is not None and best_idx is not None:
            sims = torch.cat([best_sims, sims], dim=1)  # (q, <=2k)
            idx = torch.cat([best_idx, idx], dim=1)
            sims, order = sims.topk(min(k, sims.shape[1]), dim=1)
            idx = idx.gather(1, order)
        best_sims, best_idx = sims, idx
    assert best_sims is not None and best_idx is not None
    return best_sims, best_idx


def _check_inputs(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor | None
) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(
            "features must be 2-D (num_samples, dim), got train "
            f"{tuple(train_features.shape)} and test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train and test feature dims differ: {train_features.shape[1]} "
            f"vs {test_features.shape[1]}"
        )
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ValueError(
            f"empty inputs: {train_features.shape[0]} train and {test_features.shape[0]} test "
            "features"
        )
    if not train_features.is_floating_point() or not test_features.is_floating_point():
        raise ValueError("features must be floating point")
    if train_labels.shape != train_features.shape[:1]:
        raise ValueError(
            f"train_labels must have shape ({train_features.shape[0]},), "
            f"got {tuple(train_labels.shape)}"
        )
    if test_labels is not None and test_labels.shape != test_features.shape[:1]:
        raise ValueError(
            f"test_labels must have shape ({test_features.shape[0]},), "
            f"got {tuple(test_labels.shape)}"
        )


def _resolve_num_classes(
    train_labels: Tensor, test_labels: Tensor | None, num_classes: int | None
) -> int:
    """Check that labels are integers in range and return the number of classes."""
    labels = [train_labels] if test_labels is None else [train_labels, test_labels]
    for lab in labels:
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got {lab.dtype}")
    lowest = min(int(lab.min()) for lab in labels if lab.numel())
    highest = max(int(lab.max()) for lab in labels if lab.numel())
    if lowest < 0:
        raise ValueError(f"labels must be non-negative, found {lowest}")
    if num_classes is None:
        return highest + 1
    if highest >= num_classes:
        raise ValueError(f"found label {highest} but num_classes is {num_classes}")
    return num_classes
