"""Soft-target cross-entropy through a wide output layer, in chunks of rows.

For features ``f`` ``(N, d)``, the normalised last-layer weight ``W`` ``(K, d)``, a temperature
``T`` and non-negative targets ``t`` ``(N, K)`` (rows need not sum to one: a row holds the
weighted sum of the teacher distributions it is paired with), the loss is

    L = sum_r sum_k -t[r, k] * log_softmax(f[r] @ W.T / T)[k]
      = sum_r (m_r * logsumexp(z_r) - <t_r, z_r>),   z_r = f[r] @ W.T / T,  m_r = sum_k t[r, k].

Its gradient with respect to the logits is ``g_r = (m_r * softmax(z_r) - t_r) / T``, so
``dL/df = g @ W`` and ``dL/dW = g.T @ f``. Both are accumulated chunk by chunk during the
forward pass and kept (``(N, d)`` and ``(K, d)``); backward only scales them by the incoming
gradient. No ``(N, K)`` tensor is ever stored: peak extra memory is a few ``(chunk, K)``
float32 buffers (logits, targets, probabilities) plus the targets' own working memory, and the
matrix products are the same three a plain autograd implementation does. Targets can be given
as a tensor or produced per chunk by a function, so they never need to exist for all rows at
once. The loss is not twice differentiable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

TargetFn = Callable[[int, int], Tensor]
"""``fn(start, end)`` returns the ``(end - start, K)`` targets of rows ``start .. end``."""

DEFAULT_CHUNK_ELEMENTS = 2**28
"""Rows per chunk default to this many logits (1 GiB per float32 ``(chunk, K)`` buffer)."""


def soft_cross_entropy(
    features: Tensor,
    weight: Tensor,
    targets: Tensor | TargetFn,
    temperature: float,
    *,
    chunks: Sequence[tuple[int, int]] | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Sum over rows of the soft-target cross-entropy, computed in chunks.

    Args:
        features: ``(N, d)`` features (the head's normalised bottleneck).
        weight: ``(K, d)`` last-layer weight; logits are ``features @ weight.T``.
        targets: ``(N, K)`` non-negative targets, or a :data:`TargetFn`.
        temperature: softmax temperature ``T > 0`` of the logits.
        chunks: ``(start, end)`` row ranges that partition ``0 .. N`` in order; None splits
            the rows evenly into chunks of ``chunk_size``.
        chunk_size: rows per chunk when ``chunks`` is None; None gives
            ``DEFAULT_CHUNK_ELEMENTS // K`` rows.

    Returns:
        Scalar loss in float32 (float64 for float64 features), differentiable with respect to
        ``features`` and ``weight``.

    Raises:
        ValueError: on mismatched shapes, a non-positive temperature, or chunks that do not
            partition the rows.
    """
    num_rows, dim = features.shape
    if weight.ndim != 2 or weight.shape[1] != dim:
        raise ValueError(
            f"weight must have shape (K, {dim}) to match features, got {tuple(weight.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if isinstance(targets, Tensor):
        if targets.shape != (num_rows, weight.shape[0]):
            raise ValueError(
                f"targets must have shape ({num_rows}, {weight.shape[0]}), "
                f"got {tuple(targets.shape)}"
            )
        dense = targets
        target_fn: TargetFn = lambda start, end: dense[start:end]  # noqa: E731
    else:
        target_fn = targets
    if chunks is None:
        size = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // max(1, weight.shape[0]))
        if size < 1:
            raise ValueError(f"chunk_size must be positive, got {size}")
        chunks = [(s, min(s + size, num_rows)) for s in range(0, num_rows, size)]
    _check_chunks(chunks, num_rows)
    needs_grad = torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)
    if not needs_grad:
        loss, _, _ = _chunked_loss(features, weight, target_fn, temperature, chunks, False)
        return loss
    out: Tensor = _FusedSoftCrossEntropy.apply(features, weight, target_fn, temperature, chunks)
    return out


def _check_chunks(chunks: Sequence[tuple[int, int]], num_rows: int) -> None:
    position = 0
    for start, end in chunks:
        if start != position or end < start:
            raise ValueError(f"chunks must partition rows 0 .. {num_rows} in order, got {chunks}")
        position = end
    if position != num_rows:
        raise ValueError(f"chunks must partition rows 0 .. {num_rows} in order, got {chunks}")


def _chunked_loss(
    features: Tensor,
    weight: Tensor,
    target_fn: TargetFn,
    temperature: float,
    chunks: Sequence[tuple[int, int]],
    with_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss and, with ``with_grad``, its gradients ``(N, d)`` and ``(K, d)``; no autograd."""
    acc = torch.promote_types(features.dtype, torch.float32)
    loss = torch.zeros((), dtype=acc, device=features.device)
    grad_f = torch.zeros_like(features) if with_grad else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if with_grad else None
    with torch.no_grad():
        for start, end in chunks:
            if end == start:
                continue
            f = features[start:end]  # (c, d)
            z = (f @ weight.T).to(acc).div_(temperature)  # (c, K)
            t = target_fn(start, end).to(acc)  # (c, K)
            mass = t.sum(dim=1)  # (c,)
            loss += (mass * torch.logsumexp(z, dim=1)).sum() - torch.dot(t.flatten(), z.flatten())
            if grad_f is None or grad_w is None:
                continue
            g = torch.softmax(z, dim=1).mul_(mass[:, None]).sub_(t).div_(temperature)  # (c, K)
            del z, t
            grad_f[start:end] = (g.to(weight.dtype) @ weight).to(grad_f.dtype)  # (c, d)
            grad_w += (g.T.to(f.dtype) @ f).to(acc)  # (K, d)
    return loss, grad_f, grad_w


class StoredGradients(torch.autograd.Function):
    """A loss whose forward also computes its gradients with respect to its first two inputs
    (``features`` and ``weight``); backward only scales them by the incoming gradient.

    Subclasses implement ``forward`` and end it with :meth:`store`.
    """

    @staticmethod
    def store(ctx: Any, grad_features: Tensor, grad_weight: Tensor, weight: Tensor) -> None:
        """Keep the gradients for backward (that of the weight in its dtype)."""
        ctx.save_for_backward(grad_features, grad_weight.to(weight.dtype))

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        grad_f, grad_w = ctx.saved_tensors
        grad_features = grad_f * grad_loss.to(grad_f.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = grad_w * grad_loss.to(grad_w.dtype) if ctx.needs_input_grad[1] else None
        others = (None,) * (len(ctx.needs_input_grad) - 2)  # the inputs without gradients
        return (grad_features, grad_weight, *others)


class _FusedSoftCrossEntropy(StoredGradients):
    """The chunked soft cross-entropy with its gradients computed in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any,
        features: Tensor,
        weight: Tensor,
        target_fn: TargetFn,
        temperature: float,
        chunks: Sequence[tuple[int, int]],
    ) -> Tensor:
        loss, grad_f, grad_w = _chunked_loss(features, weight, target_fn, temperature, chunks, True)
        assert grad_f is not None and grad_w is not None
        StoredGradients.store(ctx, grad_f, grad_w, weight)
        return loss
