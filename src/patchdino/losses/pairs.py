"""Which tokens the local-global loss pairs, and with what weight: the pair plan of a batch.

A :class:`PairPlan` depends only on the patch matches and the views' token counts, not on any
token value, so it can be built before the networks run, or on the CPU in a data-loading
worker, and moved to the device with the batch. Building it involves data-dependent shapes
(and so host-device synchronisation when the matches live on an accelerator); using it in
the loss involves none.

For each of its two problems (CLS tokens and patch tokens, which are never paired with each
other) the plan holds:

- the selected tokens of the student and of the teacher: every token that takes part in some
  pair, one row per token, ordered sample-major (all rows of sample 0, then sample 1, ...),
  so that a chunk of whole samples of student rows only needs the teacher rows of the same
  samples;
- per student row, its teacher partners and pair weights, padded to the largest partner
  count ``M`` with zero weights: the sparse ``(Ns, Nt)`` pair-weight matrix as row lists.

Pair weights fold in the whole normalisation of the loss: the mean over token pairs within a
``(sample, teacher view, student view)`` (or the fixed CLS / patch split), and the mean over
view pairs and samples (see :mod:`patchdino.losses.local_global`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from patchdino.config.checks import literal_values
from patchdino.config.loss import ClsWeighting
from patchdino.matching.types import PatchMatches

CLS_WEIGHTINGS: tuple[str, ...] = literal_values(ClsWeighting) or ()
"""``loss.cls_weighting`` values."""

ViewPair = tuple[int, int]
"""``(teacher view, student view)``; global views first, then local views."""


@dataclass(frozen=True)
class TokenSelection:
    """Selected tokens of several views as sample-major rows.

    Attributes:
        index: per view, ``(n_v,)`` long indices into that view's tokens flattened to
            ``(B * T_v, D)`` (``T_v`` tokens per sample, CLS included).
        order: ``(R,)`` long permutation taking the views' concatenated selections to
            sample-major row order.
        positions: ``(R,)`` long token position of each row in its view (0 = CLS).
        kinds: ``(R,)`` long view kind of each row (0 = global, 1 = local).
        sample_offsets: ``B + 1`` ints; the rows of sample ``b`` are
            ``sample_offsets[b] .. sample_offsets[b + 1]``.
    """

    index: list[Tensor]
    order: Tensor
    positions: Tensor
    kinds: Tensor
    sample_offsets: list[int]

    @property
    def num_rows(self) -> int:
        return self.sample_offsets[-1]

    def gather(self, tokens: Sequence[Tensor]) -> Tensor:
        """``(R, D)`` selected rows of per-view ``(B, T_v, D)`` tokens."""
        parts = [
            t.reshape(-1, t.shape[-1]).index_select(0, idx) for t, idx in zip(tokens, self.index)
        ]  # (n_v, D) each
        return torch.cat(parts).index_select(0, self.order)

    def to(self, device: torch.device | str) -> TokenSelection:
        return replace(
            self,
            index=[i.to(device, non_blocking=True) for i in self.index],
            order=self.order.to(device, non_blocking=True),
            positions=self.positions.to(device, non_blocking=True),
            kinds=self.kinds.to(device, non_blocking=True),
        )


@dataclass(frozen=True)
class ProblemPlan:
    """Selected tokens and pair weights of one problem (CLS tokens or patch tokens).

    Attributes:
        student: selection of the student's tokens (``Ns`` rows).
        teacher: selection of the teacher's tokens (``Nt`` rows).
        partners: ``(Ns, M)`` long teacher row of each partner (0 in padding).
        weights: ``(Ns, M)`` float64 pair weight of each partner (0 in padding).
    """

    student: TokenSelection
    teacher: TokenSelection
    partners: Tensor
    weights: Tensor

    def to(self, device: torch.device | str) -> ProblemPlan:
        return ProblemPlan(
            self.student.to(device),
            self.teacher.to(device),
            self.partners.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
        )


@dataclass(frozen=True)
class PairPlan:
    """Everything the loss needs to know about a batch besides the token values.

    Attributes:
        batch_size: ``B``.
        num_tokens: ``T_v = 1 + N_v`` tokens per sample of each student view.
        num_global: number of global views (the first ones).
        num_teacher_views: global views, plus the local views with local-local pairs.
        view_pairs: the ``(teacher view, student view)`` pairs of the loss.
        cls: the CLS problem.
        patch: the patch problem, or None without the patch loss.
        matched_patches: float64 scalar, mean matched patch pairs per ``(sample, view pair)``.
        masks: per global view, ``(B, N)`` bool, True for the patches the student's view
            hides; None without masking.
        masked: the masked-patch problem (student masked tokens, teacher tokens at the same
            positions of the same view), or None without masking.
    """

    batch_size: int
    num_tokens: tuple[int, ...]
    num_global: int
    num_teacher_views: int
    view_pairs: list[ViewPair]
    cls: ProblemPlan
    patch: ProblemPlan | None
    matched_patches: Tensor
    masks: tuple[Tensor, ...] | None = None
    masked: ProblemPlan | None = None

    def to(self, device: torch.device | str) -> PairPlan:
        """Copy of the plan on ``device`` (non-blocking)."""
        return replace(
            self,
            cls=self.cls.to(device),
            patch=None if self.patch is None else self.patch.to(device),
            matched_patches=self.matched_patches.to(device, non_blocking=True),
            masks=None
            if self.masks is None
            else tuple(m.to(device, non_blocking=True) for m in self.masks),
            masked=None if self.masked is None else self.masked.to(device),
        )


def view_pairs(num_global: int, num_views: int, local_local: bool = False) -> list[ViewPair]:
    """``(teacher view, student view)`` pairs of the loss, in a fixed order.

    Every global view ``i`` with every other view ``v != i``; with ``local_local``, also every
    ordered pair of distinct local views.
    """
    pairs = [(i, v) for i in range(num_global) for v in range(num_views) if v != i]
    if local_local:
        local = range(num_global, num_views)
        pairs += [(i, v) for i in local for v in local if v != i]
    return pairs


def plan_pairs(
    matches: Mapping[ViewPair, PatchMatches] | None,
    num_tokens: Sequence[int],
    batch_size: int,
    num_global: int,
    *,
    patch_loss: bool = True,
    cls_weighting: str = "token",
    cls_weight: float = 0.5,
    local_local: bool = False,
    device: torch.device | str | None = None,
    masks: Sequence[Tensor] | None = None,
) -> PairPlan:
    """Build the pair plan of a batch.

    Args:
        matches: ``{(i, v): PatchMatches}`` with ``index_a`` in view ``i`` and ``index_b`` in
            view ``v`` for every pair of :func:`view_pairs`; a pair of two global views may be
            given as ``(v, i)`` instead. Unused (may be None) without the patch loss.
        num_tokens: ``1 + N_v`` tokens per sample of each view, globals first.
        batch_size: ``B``.
        num_global: number of global views.
        patch_loss: pair matched patches too; False keeps the CLS pairs only, with weight 1.
        cls_weighting: ``"token"`` (CLS is one pair among ``1 + |matches|``) or ``"split"``
            (CLS weight ``cls_weight``, mean over patches ``1 - cls_weight``).
        cls_weight: CLS weight of the ``"split"`` weighting.
        local_local: add local-local view pairs.
        device: where to build the plan; default the matches' device (CPU without matches).
        masks: per global view, ``(B, N_v)`` bool masks of the student's hidden patches, for
            the masked-patch problem (:func:`masked_plan`); None without masking.

    Returns:
        The :class:`PairPlan`.

    Raises:
        ValueError: on missing, misshapen or out-of-range matches, or bad arguments.
    """
    if cls_weighting not in CLS_WEIGHTINGS:
        raise ValueError(f"cls_weighting must be one of {CLS_WEIGHTINGS}, got {cls_weighting!r}")
    num_views = len(num_tokens)
    if not 1 <= num_global <= num_views:
        raise ValueError(f"need 1 <= num_global <= {num_views} views, got {num_global}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    pairs = view_pairs(num_global, num_views, local_local)
    if not pairs:
        raise ValueError("the loss needs at least two views (one teacher, one student)")
    num_teachers = num_views if local_local else num_global
    found = _pair_matches(matches, pairs, num_tokens, batch_size, num_global) if patch_loss else []
    if device is None:
        device = found[0].valid.device if found else torch.device("cpu")
    found = [m.to(device) for m in found]
    cls_w, patch_w, matched = _pair_weights(
        len(pairs), found, batch_size, cls_weighting, cls_weight, device
    )
    kinds = [0 if i < num_global else 1 for i in range(num_teachers)]
    cls_plan = _cls_plan(pairs, num_tokens, num_teachers, kinds, cls_w, batch_size, device)
    patch_plan = (
        _patch_plan(pairs, found, num_tokens, num_teachers, kinds, patch_w) if patch_loss else None
    )
    masked = None
    if masks is not None:
        masks = tuple(m.to(device) for m in masks)
        masked = masked_plan(masks, num_tokens, num_teachers, kinds)
    return PairPlan(
        batch_size=batch_size,
        num_tokens=tuple(num_tokens),
        num_global=num_global,
        num_teacher_views=num_teachers,
        view_pairs=pairs,
        cls=cls_plan,
        patch=patch_plan,
        matched_patches=matched,
        masks=None if masks is None else tuple(masks),
        masked=masked,
    )


def masked_plan(
    masks: Sequence[Tensor],
    num_tokens: Sequence[int],
    num_teachers: int,
    kinds: Sequence[int],
) -> ProblemPlan:
    """The masked-patch problem: each hidden student patch and the teacher's same patch.

    Student patch ``p`` of global view ``v`` (hidden by the mask) is paired with the
    teacher's patch ``p`` of the same view, which the teacher saw unmasked. As in iBOT, each
    masked view of a sample weighs the same: a pair's weight is ``1 / n(b, v)`` (``n`` the
    hidden patches of that view) divided by the number of masked ``(b, v)``, so the problem's
    loss is the mean over masked views of their mean over hidden patches.

    Args:
        masks: per global view, ``(B, N_v)`` bool, True where the student's view is hidden.
        num_tokens: ``1 + N_v`` tokens per sample of each view, globals first.
        num_teachers: teacher views (globals, then locals with local-local pairs).
        kinds: view kind of each teacher view.

    Raises:
        ValueError: for masks of the wrong number or shape.
    """
    batch_size = masks[0].shape[0] if masks else 0
    if not masks or len(masks) > num_teachers:
        raise ValueError(f"need one mask per global view (1 to {num_teachers}), got {len(masks)}")
    for v, mask in enumerate(masks):
        if mask.dtype != torch.bool or mask.shape != (batch_size, num_tokens[v] - 1):
            raise ValueError(
                f"the mask of global view {v} must be a (B={batch_size}, N={num_tokens[v] - 1}) "
                f"bool tensor, got {mask.dtype} {tuple(mask.shape)}"
            )
    device = masks[0].device
    # Token position 1 + p for patch p: the same selection on both sides.
    chosen = [torch.zeros(batch_size, n, dtype=torch.bool, device=device) for n in num_tokens]
    for v, mask in enumerate(masks):
        chosen[v][:, 1:] = mask
    student, s_rows = _select(chosen, [0] * len(chosen))
    teacher, t_rows = _select(chosen[:num_teachers], kinds)
    counts = torch.stack([m.sum(dim=1) for m in masks]).to(torch.float64)  # (G, B)
    views = (counts > 0).sum().clamp_min(1).to(torch.float64)
    entries = []
    for v, mask in enumerate(masks):
        rows = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)  # (B, 1 + N)
        per_view = 1.0 / (counts[v].clamp_min(1.0) * views)  # (B,)
        weight = per_view[:, None].expand_as(mask)[mask]
        entries.append((s_rows[v][rows], t_rows[v][rows], weight))
    return _problem(student, teacher, entries)


def _pair_matches(
    matches: Mapping[ViewPair, PatchMatches] | None,
    pairs: Sequence[ViewPair],
    num_tokens: Sequence[int],
    batch_size: int,
    num_global: int,
) -> list[PatchMatches]:
    """Matches of each view pair, checked for shape and index range (one synchronisation)."""
    if matches is None:
        raise ValueError("the patch loss needs matches for every view pair")
    found: list[PatchMatches] = []
    bad: list[Tensor] = []
    for i, v in pairs:
        m = matches.get((i, v))
        if m is None and v < num_global and (v, i) in matches:
            m = matches[(v, i)].swap()
        if m is None:
            raise ValueError(f"no matches for view pair (teacher {i}, student {v})")
        shape = m.valid.shape
        if (
            not (m.index_a.shape == m.index_b.shape == shape)
            or len(shape) != 2
            or (shape[0] != batch_size)
        ):
            raise ValueError(
                f"matches of view pair {(i, v)} must be (B={batch_size}, K) tensors, got "
                f"{tuple(m.index_a.shape)}, {tuple(m.index_b.shape)}, {tuple(shape)}"
            )
        out_a = (m.index_a < 0) | (m.index_a >= num_tokens[i] - 1)
        out_b = (m.index_b < 0) | (m.index_b >= num_tokens[v] - 1)
        if found and m.valid.device != found[0].valid.device:
            raise ValueError(
                f"matches of all view pairs must be on one device, got {m.valid.device} for "
                f"{(i, v)} and {found[0].valid.device} for {pairs[0]}"
            )
        bad.append((m.valid & (out_a | out_b)).any())
        found.append(m)
    for pair, flag in zip(pairs, torch.stack(bad).tolist()):
        if flag:
            raise ValueError(f"matches of view pair {pair} hold patch indices out of range")
    return found


def _pair_weights(
    num_pairs: int,
    found: Sequence[PatchMatches],
    batch_size: int,
    cls_weighting: str,
    cls_weight: float,
    device: torch.device | str,
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Per view pair, the ``(B,)`` weight of its CLS pair and of each of its patch pairs.

    Also returns the mean number of matched patches per ``(sample, view pair)``.
    """
    scale = torch.full((batch_size,), 1.0 / (batch_size * num_pairs), dtype=torch.float64)
    scale = scale.to(device)
    if not found:
        return [scale] * num_pairs, [], torch.zeros((), dtype=torch.float64, device=device)
    cls_w, patch_w, counts = [], [], []
    for m in found:
        count = m.valid.sum(dim=1).to(torch.float64)  # (B,)
        counts.append(count)
        if cls_weighting == "token":
            cls_w.append(scale / (1.0 + count))
            patch_w.append(scale / (1.0 + count))
        else:
            cls_w.append(scale * cls_weight)
            patch_w.append(scale * (1.0 - cls_weight) / count.clamp_min(1.0))
    return cls_w, patch_w, torch.stack(counts).mean()


def _cls_plan(
    pairs: Sequence[ViewPair],
    num_tokens: Sequence[int],
    num_teachers: int,
    kinds: Sequence[int],
    cls_w: Sequence[Tensor],
    batch_size: int,
    device: torch.device | str,
) -> ProblemPlan:
    """CLS tokens of the views that take part in a pair, and the CLS pair weights."""
    s_sel = [torch.zeros(batch_size, n, dtype=torch.bool, device=device) for n in num_tokens]
    t_sel = [s.clone() for s in s_sel[:num_teachers]]
    for i, v in pairs:
        t_sel[i][:, 0] = True
        s_sel[v][:, 0] = True
    student, s_rows = _select(s_sel, [0] * len(s_sel))
    teacher, t_rows = _select(t_sel, kinds)
    entries = [(s_rows[v][:, 0], t_rows[i][:, 0], w) for (i, v), w in zip(pairs, cls_w)]
    return _problem(student, teacher, entries)


def _patch_plan(
    pairs: Sequence[ViewPair],
    found: Sequence[PatchMatches],
    num_tokens: Sequence[int],
    num_teachers: int,
    kinds: Sequence[int],
    patch_w: Sequence[Tensor],
) -> ProblemPlan:
    """Matched patch tokens of every view and the patch pair weights."""
    batch_size, device = found[0].valid.shape[0], found[0].valid.device
    # Token position 1 + p for patch p; invalid entries write to position 0, cleared below.
    s_sel = [torch.zeros(batch_size, n, dtype=torch.bool, device=device) for n in num_tokens]
    t_sel = [s.clone() for s in s_sel[:num_teachers]]
    for (i, v), m in zip(pairs, found):
        t_sel[i].scatter_(1, torch.where(m.valid, m.index_a + 1, 0), True)
        s_sel[v].scatter_(1, torch.where(m.valid, m.index_b + 1, 0), True)
    for sel in (*s_sel, *t_sel):
        sel[:, 0] = False
    student, s_rows = _select(s_sel, [0] * len(s_sel))
    teacher, t_rows = _select(t_sel, kinds)
    entries = []
    for (i, v), m, w in zip(pairs, found, patch_w):
        s = s_rows[v].gather(1, torch.where(m.valid, m.index_b + 1, 0))  # (B, K)
        t = t_rows[i].gather(1, torch.where(m.valid, m.index_a + 1, 0))
        entries.append((s[m.valid], t[m.valid], w[:, None].expand_as(s)[m.valid]))
    return _problem(student, teacher, entries)


def _select(
    selected: Sequence[Tensor], kinds: Sequence[int]
) -> tuple[TokenSelection, list[Tensor]]:
    """Sample-major rows of the selected tokens.

    Args:
        selected: per view ``(B, T_v)`` bool, True for tokens to keep.
        kinds: view kind of each view.

    Returns:
        The selection and, per view, the ``(B, T_v)`` long row of each token (-1 if unused).
    """
    device = selected[0].device
    per_view = torch.stack([s.sum(dim=1) for s in selected], dim=1)  # (B, V)
    flat = per_view.flatten()  # sample-major
    starts = (flat.cumsum(0) - flat).view_as(per_view)  # (B, V) first row of (b, v)
    sample_offsets = [0, *per_view.sum(dim=1).cumsum(0).tolist()]
    row_of, rows, index, positions, view_kinds = [], [], [], [], []
    for v, sel in enumerate(selected):
        row = torch.where(sel, starts[:, v : v + 1] + sel.cumsum(dim=1) - 1, -1)  # (B, T_v)
        row_of.append(row)
        rows.append(row[sel])
        sample, position = sel.nonzero(as_tuple=True)
        index.append(sample * sel.shape[1] + position)
        positions.append(position)
        view_kinds.append(torch.full_like(position, kinds[v]))
    order = torch.empty(sample_offsets[-1], dtype=torch.long, device=device)
    order[torch.cat(rows)] = torch.arange(sample_offsets[-1], device=device)
    selection = TokenSelection(
        index, order, torch.cat(positions)[order], torch.cat(view_kinds)[order], sample_offsets
    )
    return selection, row_of


def _problem(
    student: TokenSelection,
    teacher: TokenSelection,
    entries: Sequence[tuple[Tensor, Tensor, Tensor]],
) -> ProblemPlan:
    """Partner lists from ``(student row, teacher row, weight)`` entries (``(E,)`` each)."""
    s_rows = torch.cat([e[0] for e in entries])
    t_rows = torch.cat([e[1] for e in entries])
    weights = torch.cat([e[2] for e in entries])
    num_rows = student.num_rows
    order = torch.argsort(s_rows, stable=True)
    s, t, w = s_rows[order], t_rows[order], weights[order]
    per_row = torch.zeros(num_rows, dtype=torch.long, device=s.device)
    per_row.index_add_(0, s, torch.ones_like(s))  # (Ns,)
    width = max(1, int(per_row.max())) if num_rows else 1
    slot = torch.arange(s.shape[0], device=s.device) - (per_row.cumsum(0) - per_row)[s]
    partners = torch.zeros(num_rows, width, dtype=torch.long, device=s.device)
    padded = torch.zeros(num_rows, width, dtype=torch.float64, device=s.device)
    partners[s, slot] = t
    padded[s, slot] = w
    return ProblemPlan(student, teacher, partners, padded)
