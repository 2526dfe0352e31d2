"""The training loss: the weighted sum of the configured loss terms, over one batch's views.

For each teacher view ``i`` and each student view ``v != i`` of one sample, with the matched
token pairs ``P(i, v)`` (the CLS pair included), the paper's loss is

    L(i, v) = mean over (a, b) in P(i, v) of  CE(softmax((t_a - c_a) / T_t), log_softmax(s_b / T_s))

and the loss is the mean of ``L(i, v)`` over all view pairs and samples. ``t_a`` and ``s_b``
are the teacher and student head outputs of tokens ``a`` and ``b``, ``c_a`` the centre of
token ``a`` (:class:`~patchdino.losses.centre.Centre`). It is the sum of two terms
(:mod:`patchdino.losses.terms`): the CLS pairs (:class:`~patchdino.losses.terms.ClsTerm`)
and the matched patch pairs (:class:`~patchdino.losses.terms.PatchTerm`). The masked-patch
term (iBOT) and KoLeo (DINOv2) can be added; each term has a weight, and the loss is
``sum_t weight_t * term_t``.

Weighting within one ``(sample, i, v)``:

- ``"token"`` (the reference, default): CLS is one token among ``1 + |matches|``, every pair
  has weight ``1 / (1 + |matches|)``.
- ``"split"``: the CLS term has the fixed weight ``cls_weight`` and the mean over matched
  patches ``1 - cls_weight``; a view pair without matched patches contributes only its
  ``cls_weight`` CLS term (weights are not renormalised, so CLS has the same weight
  everywhere).

With the patch term off only the CLS pairs remain with weight 1: exactly DINO's loss.

View pairs: teacher global views ``i`` with every student view ``v != i``. With
``local_local=True`` the teacher also runs on the local views, and every ordered pair of
distinct local views ``(i, v)`` is added, the teacher's tokens of local view ``i`` giving the
targets of the student's tokens of local view ``v`` (off by default; it costs a teacher pass
over the local views, and with many local views these pairs outnumber the others in the mean).

The pair plan (:mod:`patchdino.losses.pairs`) selects the tokens of each problem (CLS, matched
patches, masked patches) and their pair weights; it depends on the matches and masks only
and can be built ahead. Each problem is distilled by :func:`~patchdino.losses.distill.distill`
without any per-pair copy of a ``K``-wide tensor.

Centring (``centring``): ``"ema"`` subtracts an EMA centre. CLS tokens and patch tokens are
never paired with each other, which lets the patch tokens use a separate head and centre.
The centre is updated after every term has used it (as in DINO) with the raw teacher logits
of the selected tokens (``centre_tokens="matched"``), or of every patch token of every
teacher view (``"all"``, the reference: the teacher head then also runs, without gradients,
on the patch tokens no pair uses); see :mod:`patchdino.losses.centre` for the masked mean.
``"sinkhorn"`` normalises each problem's teacher outputs by Sinkhorn-Knopp instead
(:mod:`patchdino.losses.sinkhorn`); the EMA centres are then neither used nor updated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from patchdino.config import Config, LossConfig, TermsConfig
from patchdino.losses.centre import Centre, CentreUpdate, Centring
from patchdino.losses.centring import TeacherCentring
from patchdino.losses.heads import HeadPair, ProjectionHead
from patchdino.losses.kernel import resolve_kernel
from patchdino.losses.masks import BlockMasking
from patchdino.losses.pairs import PairPlan, ProblemPlan, ViewPair, plan_pairs, view_pairs
from patchdino.losses.sinkhorn import SinkhornCentring
from patchdino.losses.terms import TERMS, TermInputs
from patchdino.matching.types import PatchMatches

__all__ = ["HeadPair", "LocalGlobalLoss", "LocalGlobalOutput", "ProjectionHead"]


@dataclass(frozen=True)
class LocalGlobalOutput:
    """Result of :meth:`LocalGlobalLoss.forward`.

    The loss's parts and statistics are named as they are logged, so that a new term needs no
    change where they are logged.

    Attributes:
        loss: scalar loss to minimise.
        terms: detached scalars whose sum is ``loss``, by name: ``loss_<term>`` for each term
            (``loss_cls``, ``loss_patch``, ``loss_masked``, ``loss_koleo``), already weighted.
            ``loss_cls`` and ``loss_patch`` are always there (0 for a term left out).
        statistics: other detached scalars worth logging, by name: ``matched_patches``, the
            mean number of matched patch pairs per ``(sample, teacher view, student view)``.
        centre_update: see below.
    """

    loss: Tensor
    terms: Mapping[str, Tensor]
    statistics: Mapping[str, Tensor] = field(default_factory=dict)
    centre_update: CentreUpdate | None = None
    """With ``defer_centre``: the batch's EMA centre update, already being reduced across
    processes, for the caller to apply once the step is taken (or discard); else None."""

    def scalars(self) -> dict[str, Tensor]:
        """Everything to log, by name: ``loss`` (detached), the terms and the statistics."""
        return {"loss": self.loss.detach(), **self.terms, **self.statistics}


class LocalGlobalLoss(nn.Module):
    """The weighted sum of the loss terms over CLS, matched and masked tokens of the views.

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
        patch_loss: include matched patch pairs; False gives plain DINO (the patch term's
            weight becomes 0).
        cls_weighting: ``"token"`` or ``"split"`` (see the module docstring).
        cls_weight: CLS weight of the ``"split"`` weighting, in ``[0, 1]``.
        local_local: also pair local views with each other (teacher runs on local views).
        chunk_size: student tokens per cross-entropy chunk (rounded to whole samples); None
            picks about ``2**28 / K`` (1 GiB per float32 ``(chunk, K)`` buffer).
        centre_tokens: ``"matched"`` (the centre statistics average the teacher tokens that
            take part in a pair) or ``"all"`` (every token of every teacher view, the
            reference).
        weights: weight of each term by name (:data:`~patchdino.losses.terms.TERMS`); terms
            not named keep the default of their config section (1 for ``cls`` and ``patch``,
            0 for the others), and a term of weight 0 is not computed.
        centring: ``"ema"`` or ``"sinkhorn"``.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        masking: the mask sampler of the masked term; None makes the default one when that
            term has a positive weight.
        kernel: ``loss.kernel`` (:mod:`patchdino.losses.kernel`): the implementation of each
            problem's distillation; ``"auto"`` picks one on the device of each call.
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
        *,
        weights: Mapping[str, float] | None = None,
        centring: str = "ema",
        sinkhorn_iterations: int = 3,
        masking: BlockMasking | None = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        unknown = sorted(set(weights or {}) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown} (known: {', '.join(TERMS)})")
        defaults = TermsConfig()
        term_weights = {name: getattr(defaults, name).weight for name in TERMS}
        term_weights.update(weights or {})
        if not patch_loss:
            term_weights["patch"] = 0.0
        section = LossConfig(
            local_local=local_local,
            cls_weighting=cls_weighting,  # type: ignore[arg-type]
            cls_weight=cls_weight,
            centring=centring,  # type: ignore[arg-type]
            sinkhorn_iterations=sinkhorn_iterations,
            centre=centre_mode,  # type: ignore[arg-type]
            centre_tokens=centre_tokens,  # type: ignore[arg-type]
            centre_momentum=centre_momentum,
            student_temp=student_temp,
            kernel=kernel,  # type: ignore[arg-type]
        )
        for name, weight in term_weights.items():
            getattr(section.terms, name).weight = weight
        problems = section.problems("")
        if chunk_size is not None and chunk_size < 1:
            problems.append(f"chunk_size must be positive, got {chunk_size}")
        if local_local and centre_mode == "position" and num_local_patches < 1:
            problems.append(
                "local_local with the 'position' centre needs num_local_patches (patch tokens "
                "of a local view)"
            )
        if problems:
            raise ValueError(problems[0])
        self.student_temp = student_temp
        self.weights = {name: w for name, w in term_weights.items() if w > 0}
        self.terms = nn.ModuleDict({name: TERMS[name]() for name in self.weights})
        self.patch_loss = "patch" in self.weights
        self.cls_weighting = cls_weighting
        self.cls_weight = cls_weight
        self.local_local = local_local
        self.chunk_size = chunk_size
        self.kernel = kernel
        """``loss.kernel``; resolved on the device of each call (:func:`resolve_kernel`)."""
        self.num_patches = num_patches
        self.num_local_patches = num_local_patches
        self.centre_mode = centre_mode
        self.centre_tokens = centre_tokens
        self.centring = centring
        self.sinkhorn_iterations = sinkhorn_iterations
        self.masking = masking
        if "masked" in self.weights and self.masking is None:
            self.masking = BlockMasking()
        self.patch_tokens = self.patch_loss or "masked" in self.weights
        """Whether some term distils patch tokens (they then need centre rows)."""
        grids = [num_patches, num_local_patches] if local_local else [num_patches]
        shared_head = patch_out_dim is None
        self.centre = Centre(
            out_dim,
            grids if (self.patch_tokens and shared_head) else 0,
            centre_mode,
            centre_momentum,
        )
        self.patch_centre: Centre | None = None
        if self.patch_tokens and patch_out_dim is not None:
            self.patch_centre = Centre(patch_out_dim, grids, centre_mode, centre_momentum)

    @classmethod
    def from_config(cls, config: Config) -> LocalGlobalLoss:
        """The loss of ``config.loss`` for the configured view sizes and heads."""
        lo, v, m = config.loss, config.views, config.model
        return cls(
            out_dim=m.out_dim,
            num_patches=(v.global_size // m.patch_size) ** 2,
            patch_out_dim=m.patch_out_dim if m.patch_head == "separate" else None,
            num_local_patches=(v.local_size // m.patch_size) ** 2,
            student_temp=lo.student_temp,
            centre_mode=lo.centre,
            centre_momentum=lo.centre_momentum,
            cls_weighting=lo.cls_weighting,
            cls_weight=lo.cls_weight,
            local_local=lo.local_local,
            centre_tokens=lo.centre_tokens,
            weights={name: getattr(lo.terms, name).weight for name in TERMS},
            centring=lo.centring,
            sinkhorn_iterations=lo.sinkhorn_iterations,
            kernel=lo.kernel,
            masking=BlockMasking.from_config(lo.terms.masked)
            if lo.terms.masked.weight > 0
            else None,
        )

    def view_pairs(self, num_global: int, num_views: int) -> list[ViewPair]:
        """``(teacher view, student view)`` pairs that enter the loss, in a fixed order."""
        return view_pairs(num_global, num_views, self.local_local)

    def sample_masks(
        self,
        num_global: int,
        batch_size: int,
        grid: tuple[int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> list[Tensor] | None:
        """Masks of the student's global views for the masked term; None without it.

        Args:
            num_global: global views.
            batch_size: ``B``.
            grid: ``(h, w)`` patches of a global view.
            generator: source of the draws, on ``device``.
            device: where to make them.

        Returns:
            Per global view a ``(B, h * w)`` bool mask, or None.
        """
        if self.masking is None:
            return None
        return self.masking(num_global, batch_size, grid, generator, device)

    def plan(
        self,
        matches: Mapping[ViewPair, PatchMatches] | None,
        num_tokens: Sequence[int],
        batch_size: int,
        num_global: int,
        device: torch.device | str | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> PairPlan:
        """Pair plan of a batch with this loss's options (see :func:`plan_pairs`).

        Args:
            matches: ``{(i, v): PatchMatches}`` for every pair of :meth:`view_pairs`.
            num_tokens: ``1 + N_v`` tokens per sample of each view, globals first.
            batch_size: ``B``.
            num_global: number of global views.
            device: where to build it; default the matches' device.
            masks: per global view, ``(B, N)`` bool masks (:meth:`sample_masks`); required
                with the masked term.
        """
        if "masked" in self.weights and masks is None:
            raise ValueError("the masked term needs masks of the global views for the plan")
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
            masks=masks,
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
        defer_centre: bool = False,
    ) -> LocalGlobalOutput:
        """Loss of one batch, with its pairs given as a plan or as matches.

        Args:
            student_tokens: per student view, ``(B, 1 + N_v, D)`` backbone tokens, globals
                first (masked where the plan's masks say).
            teacher_tokens: per global view ``i``, ``(B, 1 + N_i, D)`` teacher tokens.
            student_heads: student ``(CLS head, patch head)``.
            teacher_heads: teacher ``(CLS head, patch head)``.
            teacher_temp: teacher temperature ``T_t`` for this step.
            plan: the batch's pair plan, made by :meth:`plan` (e.g. ahead, on the CPU).
            matches: instead of a plan, ``{(i, v): PatchMatches}`` with ``index_a`` in teacher
                view ``i`` and ``index_b`` in student view ``v``, for every pair of
                :meth:`view_pairs` (a pair of two global views may be given as ``(v, i)``);
                the plan is then made here (not with the masked term). Without the patch
                loss, both may be None.
            teacher_local_tokens: with ``local_local``, per local view the ``(B, 1 + N_v, D)``
                teacher tokens; empty otherwise.
            update_centre: afterwards, move the centre towards this batch's teacher outputs.
            defer_centre: return that move as :attr:`LocalGlobalOutput.centre_update`
                instead of making it (its reduction across processes starts now); for a
                caller that applies it only if the optimiser step is taken.

        Returns:
            :class:`LocalGlobalOutput` with a ``loss_<term>`` entry per term and the
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
        used: dict[Centre, list[tuple[Centring, bool]]] = {}

        def centring_for(problem: ProblemPlan, patches: bool) -> TeacherCentring:
            if self.centring == "sinkhorn":
                return SinkhornCentring(self.sinkhorn_iterations)
            centre = self._centre_of(patches)
            teacher = problem.teacher
            centring = centre.centring(teacher.positions, teacher.kinds, patches)
            used.setdefault(centre, []).append((centring, patches))
            return centring

        inputs = TermInputs(
            student_tokens,
            teachers,
            student_heads,
            teacher_heads,
            teacher_temp,
            self.student_temp,
            plan,
            centring_for,
            self.chunk_size,
            resolve_kernel(self.kernel, student_tokens[0].device),
        )
        values = {name: self.weights[name] * term(inputs) for name, term in self.terms.items()}
        loss = torch.stack(list(values.values())).sum()
        update = None
        if update_centre and used:
            update = self._centre_update(used, teacher_heads, teachers, len(teacher_tokens))
            if not defer_centre:
                update.apply()
        terms = {f"loss_{name}": value.detach() for name, value in values.items()}
        for name in ("loss_cls", "loss_patch"):
            terms.setdefault(name, torch.zeros_like(loss).detach())
        return LocalGlobalOutput(
            loss=loss,
            terms=dict(sorted(terms.items(), key=lambda item: _term_order(item[0]))),
            statistics={"matched_patches": plan.matched_patches.detach()},
            centre_update=update if defer_centre else None,
        )

    def _centre_of(self, patches: bool) -> Centre:
        """The centre of patch tokens (``patches``) or of CLS tokens."""
        if patches and self.patch_centre is not None:
            return self.patch_centre
        return self.centre

    def _centre_update(
        self,
        used: Mapping[Centre, Sequence[tuple[Centring, bool]]],
        teacher_heads: HeadPair,
        teachers: Sequence[Tensor],
        num_global: int,
    ) -> CentreUpdate:
        """The EMA update of every centre from the centrings of this batch that used it.

        With ``centre_tokens="all"`` the patch tokens' statistics are those of every patch
        token of every teacher view, in place of the selected ones. Each centre's logits come
        from one teacher head (a centre serves CLS and patch tokens only when they share the
        head), whose last-layer weight maps its feature sums to logit sums.
        """
        cls_head, patch_head = teacher_heads
        parts = []
        for centre, centrings in used.items():
            kinds = {patches for _, patches in centrings}
            if kinds == {False, True} and cls_head is not patch_head:
                raise ValueError("one centre serves CLS and patch tokens of different heads")
            head = patch_head if True in kinds else cls_head
            observed = [
                c for c, patches in centrings if not (patches and self.centre_tokens == "all")
            ]
            if self.centre_tokens == "all" and True in kinds:
                observed.append(_all_patches(centre, patch_head, teachers, num_global))
            with torch.no_grad():
                parts.append((centre, observed, head.last_layer_weight()))
        return CentreUpdate(parts)

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
            position_centre = self.patch_tokens and self.centre_mode == "position"
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
            or (plan.masked is None) == ("masked" in self.weights)
        ):
            raise ValueError(
                f"the pair plan was made for B={plan.batch_size}, tokens {plan.num_tokens}, "
                f"{plan.num_global} global views, patch loss {plan.patch is not None}, masks "
                f"{plan.masked is not None}; got B={student_tokens[0].shape[0]}, tokens "
                f"{num_tokens}, {len(teacher_tokens)} global views, patch loss "
                f"{self.patch_loss}, masked term {'masked' in self.weights}"
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
        start = 0
        for tokens in teachers:
            patches = tokens[:, 1:].reshape(-1, tokens.shape[-1])  # (B * N_v, D)
            end = start + patches.shape[0]
            centring.observe_features(head.forward_bottleneck(patches), start, end)
            start = end
    return centring


def _term_order(name: str) -> int:
    """Position of a ``loss_<term>`` name in :data:`~patchdino.losses.terms.TERMS`."""
    names = [f"loss_{term}" for term in TERMS]
    return names.index(name) if name in names else len(names)
