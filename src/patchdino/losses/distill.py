"""Distillation of one problem: teacher tokens' sharpened outputs into student tokens.

A *problem* is a set of selected student and teacher tokens with a sparse pair-weight matrix
between them (a :class:`~patchdino.losses.pairs.ProblemPlan`): the CLS tokens, the matched
patch tokens, or the masked patch tokens. Its loss is

    sum over pairs (a, b) of  w_ab * CE(softmax(centred(t_a) / T_t), log_softmax(s_b / T_s)),

computed without any per-pair copy of a ``K``-wide tensor:

1. Each head runs once per selected token, giving bottleneck features; the teacher's
   ``K``-wide logits and probabilities are produced chunk by chunk without gradients.
2. The loss is bilinear in the teacher probabilities and the student log-probabilities, so
   each student token's target is the weighted sum of the teacher probabilities it is paired
   with (the plan stores the weights as per-row partner lists).
3. One chunked cross-entropy runs over the student tokens
   (:func:`~patchdino.losses.cross_entropy.soft_cross_entropy`). Chunks hold whole samples,
   so each chunk's targets need only the teacher tokens of its samples, and every teacher
   token is computed exactly once. Peak extra memory is a few ``(chunk, K)`` buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from patchdino.losses.centring import TeacherCentring
from patchdino.losses.cross_entropy import DEFAULT_CHUNK_ELEMENTS, soft_cross_entropy
from patchdino.losses.factored import factored_distillation
from patchdino.losses.heads import ProjectionHead
from patchdino.losses.pairs import ProblemPlan


@dataclass(frozen=True)
class Problem:
    """One problem of a batch and what it uses.

    Attributes:
        plan: its selected tokens, pairs and weights.
        student_head: head of the student's tokens.
        teacher_head: head of the teacher's tokens.
        centring: centres its teacher logits (and, for an EMA centre, collects statistics).
    """

    plan: ProblemPlan
    student_head: ProjectionHead
    teacher_head: ProjectionHead
    centring: TeacherCentring


def distill(
    problem: Problem,
    student_tokens: Sequence[Tensor],
    teacher_tokens: Sequence[Tensor],
    teacher_temp: float,
    student_temp: float,
    chunk_size: int | None = None,
    kernel: str = "chunked",
) -> Tensor:
    """Scalar loss of one problem; its teacher logits pass through ``problem.centring``.

    Args:
        problem: the problem's plan, heads and centring.
        student_tokens: per student view, ``(B, 1 + N_v, D)`` tokens.
        teacher_tokens: per teacher view (globals, then locals), ``(B, 1 + N_v, D)``.
        teacher_temp: teacher temperature ``T_t``.
        student_temp: student temperature ``T_s``.
        chunk_size: student rows per cross-entropy chunk (rounded to whole samples); None
            picks about ``2**28 / K``.
        kernel: ``"chunked"`` (the targets' form above), ``"torch"``
            (:func:`~patchdino.losses.factored.factored_distillation`) or ``"triton"``
            (the factored form's passes in :mod:`~patchdino.losses.triton_distill`); see
            :mod:`patchdino.losses.kernel`.
    """
    student, teacher = problem.plan.student, problem.plan.teacher
    partners, pair_weights = problem.plan.partners, problem.plan.weights
    features = problem.student_head.forward_bottleneck(student.gather(student_tokens))
    weight = problem.student_head.last_layer_weight()  # (K, d)
    with torch.no_grad():
        t_features = problem.teacher_head.forward_bottleneck(
            teacher.gather(teacher_tokens)
        )  # (Nt, d)
        t_weight = problem.teacher_head.last_layer_weight()  # (K, d)
    problem.centring.prepare(t_features, t_weight, teacher_temp)
    size = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // weight.shape[0])
    if kernel in ("torch", "triton"):
        passes = None
        if kernel == "triton":  # imports Triton, which only this kernel needs
            from patchdino.losses.triton_distill import TRITON_PASSES

            passes = TRITON_PASSES
        return factored_distillation(
            features,
            weight,
            t_features,
            t_weight,
            problem.centring,
            partners,
            pair_weights,
            teacher_temp,
            student_temp,
            size,
            passes,
        )
    if kernel != "chunked":
        raise ValueError(f"unknown loss kernel {kernel!r}")
    chunks, teacher_ranges = sample_chunks(student.sample_offsets, teacher.sample_offsets, size)
    teacher_range = dict(zip([start for start, _ in chunks], teacher_ranges))

    def targets(start: int, end: int) -> Tensor:
        """``(end - start, K)`` pair-weighted teacher probabilities of student rows."""
        t0, t1 = teacher_range[start]
        logits = problem.centring(t_features[t0:t1] @ t_weight.T, t0, t1)  # (ct, K)
        probs = torch.softmax(logits.div_(teacher_temp), dim=1)  # (ct, K)
        del logits
        index = (partners[start:end] - t0).clamp_(0, max(t1 - t0 - 1, 0))  # (c, M)
        weights = pair_weights[start:end].to(probs.dtype)  # (c, M)
        out = probs[index[:, 0]].mul_(weights[:, :1])  # (c, K)
        for m in range(1, index.shape[1]):
            out.addcmul_(probs[index[:, m]], weights[:, m : m + 1])
        return out

    return soft_cross_entropy(features, weight, targets, student_temp, chunks=chunks)


def sample_chunks(
    student_offsets: Sequence[int], teacher_offsets: Sequence[int], size: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Group whole samples into chunks of at most ``size`` student rows (at least one sample).

    Returns:
        Student row ranges and the teacher row ranges of the same samples.
    """
    chunks, ranges = [], []
    num_samples = len(student_offsets) - 1
    b = 0
    while b < num_samples:
        e = b + 1
        while e < num_samples and student_offsets[e + 1] - student_offsets[b] <= size:
            e += 1
        chunks.append((student_offsets[b], student_offsets[e]))
        ranges.append((teacher_offsets[b], teacher_offsets[e]))
        b = e
    return chunks, ranges
