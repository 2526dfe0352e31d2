"""Sinkhorn-Knopp centring of teacher outputs (SwAV; DINOv2's ``sinkhorn_knopp_teacher``).

For ``M`` teacher rows with logits ``l`` ``(M, K)`` and temperature ``T``, DINOv2 forms
``Q = exp(l / T)``, normalises it to sum 1, then alternates ``n`` times: divide each
prototype's column by its sum times ``K``, divide each row by its sum times ``M``; finally
scales rows to sum 1. Written with scalings, ``Q_jk = c_j exp(l_jk / T) r_k``, and each
iteration sets

    r_k = 1 / (K sum_j c_j exp(l_jk / T)),        c_j = 1 / (M sum_k exp(l_jk / T) r_k),

starting from uniform ``c``. Because the last step normalises the rows, the result is

    p_j = softmax(l_j / T + log r),

a softmax with one per-prototype offset: a *centre* ``-T log r`` shared by all rows and
computed from the batch. Constant factors of ``r`` or ``c`` cancel, so only the column
log-sums ``log sum_j c_j exp(l_jk / T)`` are needed, and they are taken in the log domain
(no overflow at small ``T``). The logits are recomputed from ``d``-wide features chunk by
chunk (``2 n - 1`` passes), so no ``(M, K)`` tensor is kept. Under ``torch.distributed``
the column sums run over the rows of every process (all-reduced maximum and sum); the row
sums are local to each row. Rows are the teacher tokens of one problem (the CLS tokens, or
the patch tokens that take part in a pair), each counted once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from patchdino.config.checks import positive_problems


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def _column_logsumexp(
    features: Tensor, weight: Tensor, temperature: float, log_c: Tensor, chunk: int
) -> Tensor:
    """``(K,)`` ``log sum_j c_j exp(l_jk / T)`` over the rows of every process."""
    num_rows, k = features.shape[0], weight.shape[0]
    acc = log_c.dtype
    parts = []
    for start in range(0, num_rows, chunk):
        z = (features[start : start + chunk] @ weight.T).to(acc).div_(temperature)  # (c, K)
        parts.append(torch.logsumexp(z + log_c[start : start + chunk, None], dim=0))  # (K,)
    if not parts:
        parts.append(torch.full((k,), -torch.inf, dtype=acc, device=weight.device))
    local = torch.logsumexp(torch.stack(parts), dim=0)  # (K,)
    if not _distributed():
        return local
    peak = local.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.exp(local - peak)
    dist.all_reduce(total)
    return peak + torch.log(total)


@torch.no_grad()
def sinkhorn_log_offsets(
    features: Tensor, weight: Tensor, temperature: float, iterations: int = 3, chunk: int = 4096
) -> Tensor:
    """The per-prototype log-offsets ``log r`` of Sinkhorn-Knopp (see the module docstring).

    Args:
        features: ``(M, d)`` teacher features of this process's rows.
        weight: ``(K, d)`` last-layer weight; the logits are ``features @ weight.T``.
        temperature: teacher temperature ``T``.
        iterations: Sinkhorn-Knopp iterations ``n`` (DINOv2: 3).
        chunk: rows per pass over the logits.

    Returns:
        ``(K,)`` ``log r`` (float32, float64 for float64 features), up to a constant;
        ``softmax(l / T + log r)`` are the balanced teacher probabilities.
    """
    problems = positive_problems({"iterations": iterations, "temperature": temperature})
    if problems:
        raise ValueError(problems[0])
    acc = torch.promote_types(features.dtype, torch.float32)
    log_c = torch.zeros(features.shape[0], dtype=acc, device=features.device)  # (M,)
    log_r = torch.zeros(weight.shape[0], dtype=acc, device=features.device)
    for iteration in range(iterations):
        log_r = -_column_logsumexp(features, weight, temperature, log_c, chunk)  # (K,)
        log_r = torch.where(torch.isfinite(log_r), log_r, torch.zeros_like(log_r))
        if iteration == iterations - 1:
            break
        rows = []
        for start in range(0, features.shape[0], chunk):
            z = (features[start : start + chunk] @ weight.T).to(acc).div_(temperature)
            rows.append(-torch.logsumexp(z + log_r, dim=1))  # (c,)
        log_c = torch.cat(rows) if rows else log_c
    return log_r


class SinkhornCentring:
    """Centres one problem's teacher logits with the Sinkhorn-Knopp offsets of its batch.

    The drop-in alternative to :class:`~patchdino.losses.centre.Centring`: :meth:`prepare`
    sees all of the problem's teacher features once, then each call returns the chunk's
    logits shifted so that ``softmax(shifted / T)`` are the balanced probabilities.
    Nothing is kept between batches.

    Args:
        iterations: Sinkhorn-Knopp iterations.
    """

    def __init__(self, iterations: int = 3) -> None:
        self.iterations = iterations
        self._shift: Tensor | None = None

    @torch.no_grad()
    def prepare(self, features: Tensor, weight: Tensor, temperature: float) -> None:
        """Compute the offsets from ``(M, d)`` teacher features and the ``(K, d)`` weight."""
        log_r = sinkhorn_log_offsets(features, weight, temperature, self.iterations)
        self._shift = log_r * temperature  # (K,): l + T log r

    @torch.no_grad()
    def __call__(self, logits: Tensor, start: int, end: int) -> Tensor:
        """Shifted ``(end - start, K)`` logits of teacher rows ``start:end`` (the offsets'
        dtype; ``logits`` is overwritten when already in it)."""
        if self._shift is None:
            raise RuntimeError("SinkhornCentring.prepare must run before the logits are centred")
        return logits.to(self._shift.dtype).add_(self._shift)

    def offsets(self, features: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """The one-row table ``-T log r`` ``(1, K)`` and row 0 for each of the ``(M, d)``
        features' rows."""
        if self._shift is None:
            raise RuntimeError("SinkhornCentring.prepare must run before the logits are centred")
        rows = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        return -self._shift[None, :], rows
