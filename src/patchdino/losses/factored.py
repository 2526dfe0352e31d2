"""Distillation of one problem in factored form: the teacher side reduced to ``d``-wide vectors.

The last layer has no bias, so a student logit is ``z_bk = e_b . w_k / T_s`` (``e_b`` the
normalised bottleneck of student row ``b``, ``w_k`` row ``k`` of the student's normalised
last-layer weight ``W``). For a teacher distribution ``p_a`` the cross term of the
cross-entropy is then a ``d``-wide dot product:

    sum_k p_ak z_bk = e_b . mu_a / T_s,        mu_a = p_a W   (d-wide).

With pair weights ``w_ab`` (the plan's partner lists), ``tau_b = sum_a w_ab mu_a`` and
``m_b = sum_a w_ab``, the problem's loss is

    L = sum_b (m_b lse_b - e_b . tau_b / T_s),     lse_b = logsumexp_k z_bk,

and its gradients, with ``q_b = softmax(z_b)``, ``nu_b = q_b W`` and
``e~_a = sum_b w_ab e_b``:

    dL/de_b = (m_b nu_b - tau_b) / T_s,
    dL/dW   = (sum_b m_b q_b^T e_b - sum_a p_a^T e~_a) / T_s.

Two passes over ``K``-wide rows result, each one matrix product to the logits, one softmax
and two matrix products out of them: one over the teacher rows (giving ``mu`` and the
teacher half of ``dL/dW``) and one over the student rows (``lse``, ``nu`` and the student
half). No ``K``-wide target is built and no teacher row is gathered per pair: several
teachers of one student row combine on ``d``-wide vectors. As in
:mod:`patchdino.losses.cross_entropy`, the gradients are computed in the forward pass and
backward scales them; peak extra memory is a few ``(chunk, K)`` buffers. The loss is not
twice differentiable.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from patchdino.losses.centring import TeacherCentring
from patchdino.losses.cross_entropy import StoredGradients


class TeacherPass(Protocol):
    """The teacher rows' pass (see :func:`teacher_pass`)."""

    def __call__(
        self,
        teacher_features: Tensor,
        teacher_weight: Tensor,
        centring: TeacherCentring,
        values: Tensor,
        teacher_temp: float,
        chunk_size: int,
        row_grads: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]: ...


class StudentPass(Protocol):
    """The student rows' pass (see :func:`student_pass`)."""

    def __call__(
        self, features: Tensor, weight: Tensor, mass: Tensor, student_temp: float, chunk_size: int
    ) -> tuple[Tensor, Tensor, Tensor]: ...


class Passes(NamedTuple):
    """An implementation of the two passes over ``K``-wide rows."""

    teacher: TeacherPass
    student: StudentPass


def factored_distillation(
    features: Tensor,
    weight: Tensor,
    teacher_features: Tensor,
    teacher_weight: Tensor,
    centring: TeacherCentring,
    partners: Tensor,
    pair_weights: Tensor,
    teacher_temp: float,
    student_temp: float,
    chunk_size: int,
    passes: Passes | None = None,
) -> Tensor:
    """Scalar loss ``sum_(a,b) w_ab CE(softmax(centre(t_a) / T_t), log_softmax(s_b / T_s))``.

    Args:
        features: ``(Ns, d)`` student features (the head's normalised bottleneck).
        weight: ``(K, d)`` student last-layer weight; student logits are ``features @ W.T``.
        teacher_features: ``(Nt, d)`` teacher features (no gradient).
        teacher_weight: ``(K, d)`` teacher last-layer weight (no gradient).
        centring: centres the raw teacher logits.
        partners: ``(Ns, M)`` long teacher row of each student row's partners.
        pair_weights: ``(Ns, M)`` non-negative pair weights (0 in padding).
        teacher_temp: ``T_t > 0``.
        student_temp: ``T_s > 0``.
        chunk_size: rows per ``(chunk, K)`` buffer, ``>= 1`` (the PyTorch passes).
        passes: the passes' implementation; None: :data:`TORCH_PASSES`.

    Returns:
        Scalar loss in float32 (float64 for float64 features), differentiable with respect to
        ``features`` and ``weight``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for name, temperature in (("teacher_temp", teacher_temp), ("student_temp", student_temp)):
        if temperature <= 0:
            raise ValueError(f"{name} must be positive, got {temperature}")
    rest = (
        teacher_features,
        teacher_weight,
        centring,
        partners,
        pair_weights,
        teacher_temp,
        student_temp,
        chunk_size,
        passes or TORCH_PASSES,
    )  # _factored's, in its order
    needs_grad = torch.is_grad_enabled() and (features.requires_grad or weight.requires_grad)
    if not needs_grad:
        loss, _, _ = _factored(False, features, weight, *rest)
        return loss
    out: Tensor = _FactoredDistillation.apply(features, weight, *rest)
    return out


@torch.no_grad()
def teacher_pass(
    teacher_features: Tensor,
    teacher_weight: Tensor,
    centring: TeacherCentring,
    values: Tensor,
    teacher_temp: float,
    chunk_size: int,
    row_grads: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``mu = softmax(centring(t W_t.T) / T_t) @ values`` and, given ``row_grads`` ``G``,
    ``sum_a p_a^T G_a``.

    Args:
        teacher_features: ``(Nt, d)``.
        teacher_weight: ``(K, d)``.
        centring: centres each chunk of raw logits (called once per row, in order).
        values: ``(K, d)`` (the student's last-layer weight).
        teacher_temp: ``T_t``.
        chunk_size: teacher rows per ``(chunk, K)`` buffer.
        row_grads: ``(Nt, d)`` or None.

    Returns:
        ``mu`` ``(Nt, d)`` and the ``(K, d)`` product (None without ``row_grads``), both in
        float32 (float64 for float64 features).
    """
    acc = torch.promote_types(teacher_features.dtype, torch.float32)
    num_rows = teacher_features.shape[0]
    mu = torch.zeros(num_rows, values.shape[1], dtype=acc, device=values.device)
    grad = None if row_grads is None else torch.zeros(values.shape, dtype=acc, device=values.device)
    for start in range(0, num_rows, chunk_size):
        end = min(start + chunk_size, num_rows)
        logits = centring(teacher_features[start:end] @ teacher_weight.T, start, end)  # (c, K)
        probs = torch.softmax(logits.to(acc).div_(teacher_temp), dim=1)  # (c, K)
        del logits
        mu[start:end] = probs.to(values.dtype) @ values
        if grad is not None and row_grads is not None:
            grad += (probs.T.to(row_grads.dtype) @ row_grads[start:end]).to(acc)
    return mu, grad


@torch.no_grad()
def student_pass(
    features: Tensor, weight: Tensor, mass: Tensor, student_temp: float, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row log-sum-exp of ``z = features @ W.T / T_s`` and the student half of the
    gradients.

    Args:
        features: ``(Ns, d)``.
        weight: ``(K, d)``.
        mass: ``(Ns,)`` total pair weight ``m_b`` of each row.
        student_temp: ``T_s``.
        chunk_size: rows per ``(chunk, K)`` buffer.

    Returns:
        ``lse`` ``(Ns,)``, ``m_b nu_b`` ``(Ns, d)`` and ``sum_b m_b q_b^T e_b`` ``(K, d)``, in
        float32 (float64 for float64 features).
    """
    acc = torch.promote_types(features.dtype, torch.float32)
    num_rows = features.shape[0]
    lse = torch.zeros(num_rows, dtype=acc, device=features.device)
    nu = torch.zeros(num_rows, weight.shape[1], dtype=acc, device=features.device)
    grad = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    for start in range(0, num_rows, chunk_size):
        end = min(start + chunk_size, num_rows)
        f = features[start:end]  # (c, d)
        z = (f @ weight.T).to(acc).div_(student_temp)  # (c, K)
        lse[start:end] = torch.logsumexp(z, dim=1)
        q = z.sub_(lse[start:end, None]).exp_()  # (c, K): softmax rows
        m = mass[start:end, None].to(acc)  # (c, 1)
        nu[start:end] = (q.to(weight.dtype) @ weight).to(acc).mul_(m)
        grad += (q.T.to(f.dtype) @ (f * m.to(f.dtype))).to(acc)
    return lse, nu, grad


def _factored(
    with_grad: bool,
    features: Tensor,
    weight: Tensor,
    teacher_features: Tensor,
    teacher_weight: Tensor,
    centring: TeacherCentring,
    partners: Tensor,
    pair_weights: Tensor,
    teacher_temp: float,
    student_temp: float,
    chunk_size: int,
    passes: Passes,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss and, with ``with_grad``, its gradients ``(Ns, d)`` and ``(K, d)``; no autograd."""
    acc = torch.promote_types(features.dtype, torch.float32)
    with torch.no_grad():
        f = features.detach().to(acc)  # (Ns, d)
        w = pair_weights.to(acc)  # (Ns, M)
        mass = w.sum(dim=1)  # (Ns,)
        spread = None
        if with_grad:  # e~_a = sum_b w_ab e_b
            spread = torch.zeros(
                teacher_features.shape[0], features.shape[1], dtype=acc, device=features.device
            )
            contributions = w[:, :, None] * f[:, None, :]  # (Ns, M, d)
            spread.index_add_(0, partners.flatten(), contributions.flatten(0, 1))
        mu, teacher_grad = passes.teacher(
            teacher_features, teacher_weight, centring, weight, teacher_temp, chunk_size, spread
        )
        tau = (mu[partners] * w[:, :, None]).sum(dim=1)  # (Ns, d)
        lse, nu, student_grad = passes.student(features, weight, mass, student_temp, chunk_size)
        loss = torch.dot(mass, lse) - (f * tau).sum() / student_temp
        if not with_grad:
            return loss, None, None
        assert teacher_grad is not None
        grad_f = ((nu - tau) / student_temp).to(features.dtype)
        grad_w = (student_grad - teacher_grad) / student_temp
    return loss, grad_f, grad_w


class _FactoredDistillation(StoredGradients):
    """The factored distillation with its gradients computed in the forward pass."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, weight: Tensor, *rest: Any) -> Tensor:
        """``rest``: the other arguments of :func:`_factored`, in its order."""
        loss, grad_f, grad_w = _factored(True, features, weight, *rest)
        assert grad_f is not None and grad_w is not None
        StoredGradients.store(ctx, grad_f, grad_w, weight)
        return loss


TORCH_PASSES = Passes(teacher_pass, student_pass)
"""The passes in PyTorch, chunk by chunk (``loss.kernel=torch``)."""
