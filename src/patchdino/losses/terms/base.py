"""The seam every loss term plugs into: what a term receives and what it returns.

The training loss is ``sum over configured terms of weight * term(inputs)``
(:class:`~patchdino.losses.local_global.LocalGlobalLoss`). A term is a small module with one
``forward(inputs) -> Tensor``; what the step has is in :class:`TermInputs`: the student and
teacher tokens, both networks' heads, the batch's pair plan (pairs, masks) and the centring
of each problem. A new term is a file in this package, a section in
:class:`~patchdino.config.loss.TermsConfig`, and an entry in :data:`~patchdino.losses.terms.TERMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from patchdino.losses.centring import TeacherCentring
from patchdino.losses.distill import Problem, distill
from patchdino.losses.heads import HeadPair
from patchdino.losses.pairs import PairPlan, ProblemPlan

CentringFor = Callable[[ProblemPlan, bool], TeacherCentring]
"""``centring_for(plan, patches)``: the centring of a problem's teacher tokens (patch tokens
when ``patches``), recorded by the loss so that it can update its centres afterwards."""


@dataclass(frozen=True)
class TermInputs:
    """Everything of one batch that a loss term may use.

    Attributes:
        student_tokens: per student view, ``(B, 1 + N_v, D)`` backbone tokens, globals first
            (global views masked where :attr:`PairPlan.masks` says).
        teachers: per teacher view (globals, then locals with local-local pairs),
            ``(B, 1 + N_v, D)`` teacher tokens of the unmasked views.
        student_heads: student ``(CLS head, patch head)``.
        teacher_heads: teacher ``(CLS head, patch head)``.
        teacher_temp: teacher temperature ``T_t`` of this step.
        student_temp: student temperature ``T_s``.
        plan: the batch's pair plan.
        centring_for: makes (and records) the centring of a problem.
        chunk_size: student rows per cross-entropy chunk; None picks one.
        kernel: the implementation of each problem's distillation (see :func:`distill`).
    """

    student_tokens: Sequence[Tensor]
    teachers: Sequence[Tensor]
    student_heads: HeadPair
    teacher_heads: HeadPair
    teacher_temp: float
    student_temp: float
    plan: PairPlan
    centring_for: CentringFor
    chunk_size: int | None = None
    kernel: str = "chunked"

    @property
    def num_global(self) -> int:
        return self.plan.num_global

    def distill(self, plan: ProblemPlan, patches: bool) -> Tensor:
        """The scalar distillation loss of the problem ``plan`` (:func:`distill`), with the
        heads of its tokens (the patch heads when ``patches``) and their centring."""
        index = 1 if patches else 0
        problem = Problem(
            plan,
            self.student_heads[index],
            self.teacher_heads[index],
            self.centring_for(plan, patches),
        )
        return distill(
            problem,
            self.student_tokens,
            self.teachers,
            self.teacher_temp,
            self.student_temp,
            self.chunk_size,
            self.kernel,
        )


class LossTerm(nn.Module):
    """A loss term: a scalar of one batch, to be weighted and summed with the others.

    Subclasses set :attr:`name` (the term is logged as ``loss_<name>``) and implement
    :meth:`forward`.
    """

    name: str = ""

    def forward(self, inputs: TermInputs) -> Tensor:
        """The term's scalar value on this batch (not yet weighted)."""
        raise NotImplementedError
