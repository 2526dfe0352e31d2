"""Sinkhorn-Knopp centring against DINOv2's dense definition, on one process and two."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor

from patchdino.losses.sinkhorn import SinkhornCentring, sinkhorn_log_offsets


def dense_sinkhorn(logits: Tensor, temperature: float, iterations: int) -> Tensor:
    """DINOv2's ``sinkhorn_knopp_teacher`` written out on one ``(M, K)`` matrix."""
    q = torch.exp(logits / temperature).T  # (K, M)
    k, m = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k  # each prototype's row
        q = q / q.sum(dim=0, keepdim=True) / m  # each sample's column
    return (q * m).T  # (M, K), rows sum to 1


def _problem(rows: int, k: int = 40, d: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(rows, d, generator=g, dtype=torch.float64), dim=1)
    weight = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return features, weight


def _balanced(features: Tensor, weight: Tensor, temperature: float, iterations: int) -> Tensor:
    centring = SinkhornCentring(iterations)
    centring.prepare(features, weight, temperature)
    shifted = centring(features @ weight.T, 0, features.shape[0])
    return torch.softmax(shifted / temperature, dim=1)


@pytest.mark.parametrize(("iterations", "temperature"), [(1, 0.1), (3, 0.04), (5, 0.07)])
def test_offsets_give_dinov2s_probabilities(iterations: int, temperature: float) -> None:
    features, weight = _problem(23)
    expected = dense_sinkhorn(features @ weight.T, temperature, iterations)
    got = _balanced(features, weight, temperature, iterations)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_chunking_changes_nothing() -> None:
    features, weight = _problem(50)
    whole = sinkhorn_log_offsets(features, weight, 0.04, 3, chunk=1000)
    pieces = sinkhorn_log_offsets(features, weight, 0.04, 3, chunk=7)
    torch.testing.assert_close(pieces, whole, rtol=1e-12, atol=1e-12)


def test_no_overflow_at_large_logits() -> None:
    features, weight = _problem(16)
    got = _balanced(features, weight * 30.0, 0.04, 3)  # logits up to 30 / 0.04 = 750
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.sum(dim=1), torch.ones(16, dtype=torch.float64))


def test_centring_must_be_prepared() -> None:
    with pytest.raises(RuntimeError, match="prepare"):
        SinkhornCentring()(torch.zeros(2, 3), 0, 2)
    with pytest.raises(ValueError, match="iterations must be > 0"):
        sinkhorn_log_offsets(*_problem(4), 0.1, iterations=0)


def _rank(rank: int, world: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    try:
        features, weight = _problem(30)
        mine = features[rank * 13 : 13 + rank * 17]  # 13 and 17 rows: unequal shares
        torch.save(_balanced(mine, weight, 0.05, 3), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_balance_over_all_rows(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    features, weight = _problem(30)
    expected = dense_sinkhorn(features @ weight.T, 0.05, 3)
    got = torch.cat([torch.load(tmp_path / f"rank{r}.pt") for r in range(2)])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
