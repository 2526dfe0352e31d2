"""Local-global self-distillation loss: DINO's CLS loss plus a loss between matched patches.

For each teacher view ``i`` and each student view ``v != i`` of one sample, with the matched
token pairs ``P(i, v)`` (the CLS pair included),

    L(i, v) = mean over (a, b) in P(i, v) of  CE(softmax((t_a - c_a) / T_t), log_softmax(s_b / T_s))

and the loss is the mean of ``L(i, v)`` over all view pairs and samples. ``t_a`` and ``s_b``
are the teacher and student head outputs of tokens ``a`` and ``b``, ``c_a`` the centre of
token ``a`` (:class:`~patchdino.losses.centre.Centre`).

Weighting within one ``(sample, i, v)``:

- ``"token"`` (the reference, default): CLS is one token among ``1 + |matches|``, every pair
  has weight ``1 / (1 + |matches|)``.
- ``"split"``: the CLS term has the fixed weight ``cls_weight`` and the mean over matched
  patches ``1 - cls_weight``; a view pair without matched patches contributes only its
  ``cls_weight`` CLS term (weights are not renormalised, so CLS has the same weight
  everywhere).

With ``patch_loss=False`` only the CLS pairs remain with weight 1: exactly DINO's loss.

View pairs: teacher global views ``i`` with every student view ``v != i``. With
``local_local=True`` the teacher also runs on the local views, and every ordered pair of
distinct local views ``(i, v)`` is added, the teacher's tokens of local view ``i`` giving the
targets of the student's tokens of local view ``v`` (off by default; it costs a teacher pass
over the local views, and with many local views these pairs outnumber the others in the mean).

How it is computed (no per-pair copy of any ``K``-wide tensor is made):

1. Only tokens that take part in some pair are selected: the CLS tokens and the matched
   patches of every view, one row per token, sample-major (:mod:`patchdino.losses.pairs`;
   this pair plan depends on the matches only and can be built ahead, e.g. on the CPU).
2. Each head runs once per selected token, giving bottleneck features; the teacher's
   ``K``-wide logits and probabilities are produced chunk by chunk without gradients.
3. The loss is bilinear in the teacher probabilities and the student log-probabilities, so
   each student token's target is the weighted sum of the teacher probabilities it is paired
   with (a sparse ``(Ns, Nt)`` pair-weight matrix, stored as per-row partner lists).
4. One chunked cross-entropy runs over the student tokens
   (:func:`~patchdino.losses.cross_entropy.soft_cross_entropy`). Chunks hold whole samples,
   so each chunk's targets need only the teacher tokens of its samples, and every teacher
   token is computed exactly once. Peak extra memory is a few ``(chunk, K)`` buffers.

CLS tokens and patch tokens form two separate problems (they are never paired with each
other), which lets the patch tokens use a separate head and centre. The centre is updated at
the end of :meth:`LocalGlobalLoss.forward` (after it has been used, as in DINO) with the raw
teacher logits of the selected tokens (``centre_tokens="matched"``), or of every patch token
of every teacher view (``"all"``, the reference: the teacher head then also runs, without
gradients, on the patch tokens no pair uses); see :mod:`patchdino.losses.centre` for the
masked mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from patchdino.losses.centre import CENTRE_MODES, CENTRE_TOKENS, Centre, Centring
from patchdino.losses.cross_entropy import DEFAULT_CHUNK_ELEMENTS, soft_cross_entropy
from patchdino.losses.pairs import (
    CLS_WEIGHTINGS,
    PairPlan,
    ProblemPlan,
    ViewPair,
    plan_pairs,
    view_pairs,
)
from patchdino.matching.types import PatchMatches


class ProjectionHead(Protocol):
    """What the loss needs from a head (see :class:`~patchdino.models.head.DINOHead`)."""

    def forward_bottleneck(self, x: Tensor) -> Tensor:
        """``(M, D)`` tokens -> ``(M, d)`` normalised bottleneck features."""
        ...

    def last_layer_weight(self) -> Tensor:
        """``(K, d)`` normalised last-layer weight."""
        ...


HeadPair = tuple[ProjectionHead, ProjectionHead]
"""``(CLS head, patch head)``; the same head twice when it is shared."""


@dataclass(frozen=True)
class LocalGlobalOutput:
    """Result of :meth:`LocalGlobalLoss.forward`.

    The loss's parts and statistics are named as they are logged, so that a new term needs no
    change where they are logged.

    Attributes:
        loss: scalar loss to minimise.
        terms: detached scalars whose sum is ``loss``, by name: ``loss_cls`` (CLS pairs) and
            ``loss_patch`` (matched patch pairs).
        statistics: other detached scalars worth logging, by name: ``matched_patches``, the
            mean number of matched patch pairs per ``(sample, teacher view, student view)``.
    """

    loss: Tensor
    terms: Mapping[str, Tensor]
    statistics: Mapping[str, Tensor] = field(default_factory=dict)

    def scalars(self) -> dict[str, Tensor]:
        """Everything to log, by name: ``loss`` (detached), the terms and the statistics."""
        return {"loss": self.loss.detach(), **self.terms, **self.statistics}


@dataclass(frozen=True)
class _Problem:
    """One of the two problems of a batch (CLS tokens or patch tokens) and what it uses.

    Attributes:
        plan: its selected tokens, pairs and weights.
        student_head: head of the student's tokens.
        teacher_head: head of the teacher's tokens.
        centring: centres its teacher logits and collects their statistics.
    """

    plan: ProblemPlan
    student_head: ProjectionHead
    teacher_head: ProjectionHead
    centring: Centring


class LocalGlobalLoss(nn.Module):
    """DINO loss over CLS pairs and matched patch pairs of teacher and student views.

    Args:
        out_dim: output width ``K`` of the (CLS) head.
        num_patches: patch tokens ``N`` of a global view (sizes the ``"position"`` centre).
        patch_out_dim: output width of a separate patch head; None when patches share the CLS
            head.
        num_local_patches: patch tokens of a local view; needed with ``local_local`` and the
            ``"position"`` centre.
        student_temp: student temperature ``T_s``.
        centre_mode: ``"position"`` (one centre per token position, the reference) or
            ``"shared"`` (one for CLS, one for all patches).
        centre_momentum: EMA momentum of the centre.
        centre_tokens: ``"matched"`` (the centre statistics average the teacher tokens that
            take part in a pair) or ``"all"`` (every token of every teacher view, the
            reference).
        patch_loss: include matched patch pairs; False gives plain DINO.
        cls_weighting: ``"token"`` or ``"split"`` (see the module docstring).
        cls_weight: CLS weight of the ``"split"`` weighting, in ``[0, 1]``.
        local_local: also pair local views with each other (teacher runs on local views).
        chunk_size: student tokens per cross-entropy chunk (rounded to whole samples); None
            picks about ``2**28 / K`` (1 GiB per float32 ``(chunk, K)`` buffer).
    """

    def __init__(
        self,
        out_dim: int,
        num_patches: int,
        patch_out_dim: int | None = None,
        num_local_patches: int = 0,
        student_temp: float = 0.1,
        centre_mode: str = "position",
        centre_momentum: float = 0.9,
        patch_loss: bool = True,
        cls_weighting: str = "token",
        cls_weight: float = 0.5,
        local_local: bool = False,
        chunk_size: int | None = None,
        centre_tokens: str = "matched",
    ) -> None:
        super().__init__()
        if cls_weighting not in CLS_WEIGHTINGS:
            raise ValueError(
                f"cls_weighting must be one of {CLS_WEIGHTINGS}, got {cls_weighting!r}"
            )
        if centre_mode not in CENTRE_MODES:
            raise ValueError(f"centre_mode must be one of {CENTRE_MODES}, got {centre_mode!r}")
        if centre_tokens not in CENTRE_TOKENS:
            raise ValueError(f"centre_tokens must be one of {CENTRE_TOKENS}, got {centre_tokens!r}")
        if not 0.0 <= cls_weight <= 1.0:
            raise ValueError(f"cls_weight must be in [0, 1], got {cls_weight}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be positive, got {student_temp}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if local_local and centre_mode == "position" and num_local_patches < 1:
            raise ValueError(
                "local_local with the 'position' centre needs num_local_patches (patch tokens "
                "of a local view)"
            )
        self.student_temp = student_temp
        self.patch_loss = patch_loss
        self.cls_weighting = cls_weighting
        self.cls_weight = cls_weight
        self.local_local = local_local
        self.chunk_size = chunk_size
        self.num_patches = num_patches
        self.num_local_patches = num_local_patches
        self.centre_mode = centre_mode
        self.centre_tokens = centre_tokens
        grids = [num_patches, num_local_patches] if local_local else [num_patches]
        shared_head = patch_out_dim is None
        self.centre = Centre(
            out_dim, grids if (patch_loss and shared_head) else 0, centre_mode, centre_momentum
        )
        self.patch_centre: Centre | None = None
        if patch_loss and patch_out_dim is not None:
            self.patch_centre = Centre(patch_out_dim, grids, centre_mode, centre_momentum)

    def view_pairs(self, num_global: int, num_views: int) -> list[ViewPair]:
        """``(teacher view, student view)`` pairs that enter the loss, in a fixed order."""
        return view_pairs(num_global, num_views, self.local_local)

    def plan(
        self,
        matches: Mapping[ViewPair, PatchMatches] | None,
        num_tokens: Sequence[int],
        batch_size: int,
        num_global: int,
        device: torch.device | str | None = None,
    ) -> PairPlan:
        """Pair plan of a batch with this loss's options (see :func:`plan_pairs`).

        Args:
            matches: ``{(i, v): PatchMatches}`` for every pair of :meth:`view_pairs`.
            num_tokens: ``1 + N_v`` tokens per sample of each view, globals first.
            batch_size: ``B``.
            num_global: number of global views.
            device: where to build it; default the matches' device.
        """
        return plan_pairs(
            matches,
            num_tokens,
            batch_size,
            num_global,
            patch_loss=self.patch_loss,
            cls_weighting=self.cls_weighting,
            cls_weight=self.cls_weight,
            local_local=self.local_local,
            device=device,
        )

    def forward(
        self,
        student_tokens: Sequence[Tensor],
        teacher_tokens: Sequence[Tensor],
        student_heads: HeadPair,
        teacher_heads: HeadPair,
        teacher_temp: float,
        *,
        plan: PairPlan | None = None,
        matches: Mapping[ViewPair, PatchMatches] | None = None,
        teacher_local_tokens: Sequence[Tensor] = (),
        update_centre: bool = True,
    ) -> LocalGlobalOutput:
        """Loss of one batch, with its pairs given as a plan or as matches.

        Args:
            student_tokens: per student view, ``(B, 1 + N_v, D)`` backbone tokens, globals
                first.
            teacher_tokens: per global view ``i``, ``(B, 1 + N_i, D)`` teacher tokens.
            student_heads: student ``(CLS head, patch head)``.
            teacher_heads: teacher ``(CLS head, patch head)``.
            teacher_temp: teacher temperature ``T_t`` for this step.
            plan: the batch's pair plan, made by :meth:`plan` (e.g. ahead, on the CPU).
            matches: instead of a plan, ``{(i, v): PatchMatches}`` with ``index_a`` in teacher
                view ``i`` and ``index_b`` in student view ``v``, for every pair of
                :meth:`view_pairs` (a pair of two global views may be given as ``(v, i)``);
                the plan is then made here. Without the patch loss, both may be None.
            teacher_local_tokens: with ``local_local``, per local view the ``(B, 1 + N_v, D)``
                teacher tokens; empty otherwise.
            update_centre: afterwards, move the centre towards this batch's teacher outputs.

        Returns:
            :class:`LocalGlobalOutput` with the terms ``loss_cls`` and ``loss_patch`` and the
            statistic ``matched_patches``.

        Raises:
            ValueError: on inconsistent views, both a plan and matches, missing or
                out-of-range matches, a plan made for other views or options, or a
                non-positive temperature.
        """
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be positive, got {teacher_temp}")
        if plan is not None and matches is not None:
            raise ValueError("give the pairs either as a plan or as matches, not both")
        teachers = self._check_views(student_tokens, teacher_tokens, teacher_local_tokens)
        if plan is None:
            num_tokens = [t.shape[1] for t in student_tokens]
            batch = student_tokens[0].shape[0]
            plan = self.plan(matches, num_tokens, batch, len(teacher_tokens))
        plan = plan.to(student_tokens[0].device)
        self._check_plan(plan, student_tokens, teacher_tokens, teachers)

        cls = _Problem(
            plan.cls,
            student_heads[0],
            teacher_heads[0],
            self.centre.centring(plan.cls.teacher.positions, plan.cls.teacher.kinds, False),
        )
        cls_loss = self._distill(cls, student_tokens, teachers, teacher_temp)
        centrings = {self.centre: [cls.centring]}
        patch_loss = torch.zeros_like(cls_loss)
        if plan.patch is not None:
            centre = self.centre if self.patch_centre is None else self.patch_centre
            patch = _Problem(
                plan.patch,
                student_heads[1],
                teacher_heads[1],
                centre.centring(plan.patch.teacher.positions, plan.patch.teacher.kinds, True),
            )
            patch_loss = self._distill(patch, student_tokens, teachers, teacher_temp)
            observed = patch.centring
            if update_centre and self.centre_tokens == "all":
                observed = _all_patches(centre, teacher_heads[1], teachers, len(teacher_tokens))
            centrings.setdefault(centre, []).append(observed)
        if update_centre:
            for centre_module, used in centrings.items():
                centre_module.update_from(used)
        return LocalGlobalOutput(
            loss=cls_loss + patch_loss,
            terms={"loss_cls": cls_loss.detach(), "loss_patch": patch_loss.detach()},
            statistics={"matched_patches": plan.matched_patches.detach()},
        )

    def _distill(
        self,
        problem: _Problem,
        student_tokens: Sequence[Tensor],
        teacher_tokens: Sequence[Tensor],
        teacher_temp: float,
    ) -> Tensor:
        """Scalar loss of one problem; its teacher logits pass through ``problem.centring``.

        Args:
            problem: the problem's plan, heads and centring.
            student_tokens: per student view, ``(B, 1 + N_v, D)`` tokens.
            teacher_tokens: per teacher view (globals, then locals), ``(B, 1 + N_v, D)``.
            teacher_temp: teacher temperature ``T_t``.
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
        size = self.chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // weight.shape[0])
        chunks, teacher_ranges = _sample_chunks(
            student.sample_offsets, teacher.sample_offsets, size
        )
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

        return soft_cross_entropy(features, weight, targets, self.student_temp, chunks=chunks)

    def _check_views(
        self,
        student_tokens: Sequence[Tensor],
        teacher_tokens: Sequence[Tensor],
        teacher_local_tokens: Sequence[Tensor],
    ) -> list[Tensor]:
        """Validate the token tensors; return the teacher's views (globals, then locals)."""
        if not student_tokens or not teacher_tokens:
            raise ValueError("need at least one student view and one teacher view")
        num_views, num_global = len(student_tokens), len(teacher_tokens)
        if num_global > num_views:
            raise ValueError(
                f"got {num_global} teacher views but only {num_views} student views; the "
                "teacher's global views must also be the student's first views"
            )
        expected_locals = num_views - num_global if self.local_local else 0
        if len(teacher_local_tokens) != expected_locals:
            raise ValueError(
                f"expected {expected_locals} teacher local-view tensors "
                f"(local_local={self.local_local}), got {len(teacher_local_tokens)}"
            )
        teachers = [*teacher_tokens, *teacher_local_tokens]
        batch = student_tokens[0].shape[0]
        for name, tensors in (("student", student_tokens), ("teacher", teachers)):
            for v, tokens in enumerate(tensors):
                if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[1] < 1:
                    raise ValueError(
                        f"{name} tokens of view {v} must have shape (B={batch}, 1 + N, D), "
                        f"got {tuple(tokens.shape)}"
                    )
        for i, tokens in enumerate(teachers):
            if tokens.shape[1] != student_tokens[i].shape[1]:
                raise ValueError(
                    f"teacher and student tokens of view {i} differ in length: "
                    f"{tokens.shape[1]} vs {student_tokens[i].shape[1]}"
                )
            expected = self.num_patches if i < num_global else self.num_local_patches
            position_centre = self.patch_loss and self.centre_mode == "position"
            if position_centre and tokens.shape[1] != 1 + expected:
                raise ValueError(
                    f"the 'position' centre was made for {expected} patches per "
                    f"{'global' if i < num_global else 'local'} view, but teacher view {i} has "
                    f"{tokens.shape[1] - 1}"
                )
        return teachers

    def _check_plan(
        self,
        plan: PairPlan,
        student_tokens: Sequence[Tensor],
        teacher_tokens: Sequence[Tensor],
        teachers: Sequence[Tensor],
    ) -> None:
        """Raise ValueError if ``plan`` was made for other views or other loss options."""
        num_tokens = tuple(t.shape[1] for t in student_tokens)
        if (
            plan.batch_size != student_tokens[0].shape[0]
            or plan.num_tokens != num_tokens
            or plan.num_global != len(teacher_tokens)
            or plan.num_teacher_views != len(teachers)
            or (plan.patch is not None) != self.patch_loss
        ):
            raise ValueError(
                f"the pair plan was made for B={plan.batch_size}, tokens {plan.num_tokens}, "
                f"{plan.num_global} global views, patch loss {plan.patch is not None}; got "
                f"B={student_tokens[0].shape[0]}, tokens {num_tokens}, {len(teacher_tokens)} "
                f"global views, patch loss {self.patch_loss}"
            )


def _all_patches(
    centre: Centre, head: ProjectionHead, teachers: Sequence[Tensor], num_global: int
) -> Centring:
    """A centring holding the statistics of every patch token of every teacher view.

    The head runs without gradients on each view's ``B * N_v`` patch tokens, one view at a
    time; only their ``d``-wide features are kept (see :meth:`Centring.observe_features`).

    Args:
        centre: the centre of the patch tokens.
        head: the teacher's patch head.
        teachers: per teacher view (globals, then locals), ``(B, 1 + N_v, D)`` tokens.
        num_global: how many of them are global views (view kind 0; the others kind 1).
    """
    device = teachers[0].device
    positions, kinds = [], []
    for v, tokens in enumerate(teachers):
        batch, length = tokens.shape[:2]
        grid = torch.arange(1, length, device=device).repeat(batch)  # (B * N_v,), sample-major
        positions.append(grid)
        kinds.append(torch.full_like(grid, 0 if v < num_global else 1))
    centring = centre.centring(torch.cat(positions), torch.cat(kinds), True)
    with torch.no_grad():
        weight = head.last_layer_weight()  # (K, d)
        start = 0
        for tokens in teachers:
            patches = tokens[:, 1:].reshape(-1, tokens.shape[-1])  # (B * N_v, D)
            end = start + patches.shape[0]
            centring.observe_features(head.forward_bottleneck(patches), weight, start, end)
            start = end
    return centring


def _sample_chunks(
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
