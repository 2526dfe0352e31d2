"""The local-global loss computed the way the reference code does it: a benchmark baseline.

Same value as :class:`~patchdino.losses.LocalGlobalLoss` (without local-local pairs), but
computed with the reference's memory and compute pattern:

1. every head runs on **every** token of every view (student: all views; teacher: the global
   views), materialising ``(B, 1 + N_v, K)`` logits, probabilities and log-probabilities;
2. for each view pair, the matched tokens' ``K``-wide rows are gathered into new
   ``(B, M, K)`` tensors (one copy per pair) and a separate cross-entropy is taken per pair.

The centre is updated from the teacher outputs of all tokens (the reference's batch mean per
token position), not only of the matched ones. ``patchdino bench --modes reference`` times it
to show what the planned, once-per-matched-token computation of
:class:`~patchdino.losses.LocalGlobalLoss` saves; the tests compare the two.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from patchdino.losses import Centre, LocalGlobalLoss, LocalGlobalOutput
from patchdino.losses.heads import HeadPair, ProjectionHead
from patchdino.losses.pairs import ViewPair, view_pairs
from patchdino.matching.types import PatchMatches


class ReferenceLocalGlobalLoss(nn.Module):
    """Head on all tokens, per-pair gathers and per-pair cross-entropies.

    Built from the fast loss whose options it computes (temperatures, weighting, patch term,
    centres: copies of ``loss``'s, so that both start from the same values); it plugs into
    :class:`~patchdino.train.step.PretrainStep` in place of that loss, its plan being the
    batch's matches.

    Args:
        loss: the loss to compute the reference's way.

    Raises:
        ValueError: for options the reference code does not have (local-local pairs, loss
            terms other than ``cls`` and ``patch``, Sinkhorn-Knopp centring).
    """

    local_local = False
    """The reference has no local-local pairs."""

    def __init__(self, loss: LocalGlobalLoss) -> None:
        super().__init__()
        if loss.local_local:
            raise ValueError("the reference computation has no local-local pairs")
        others = sorted(set(loss.weights) - {"cls", "patch"})
        if others or loss.centring != "ema":
            raise ValueError(
                "the reference computation has the cls and patch terms with an EMA centre "
                f"only, not {', '.join(others) or 'centring=' + loss.centring}"
            )
        self.student_temp = loss.student_temp
        self.patch_loss = loss.patch_loss
        self.cls_weighting = loss.cls_weighting
        self.cls_weight = loss.cls_weight
        self.weights = dict(loss.weights)
        self.centre = copy.deepcopy(loss.centre)
        self.patch_centre = copy.deepcopy(loss.patch_centre)

    def view_pairs(self, num_global: int, num_views: int) -> list[ViewPair]:
        """``(teacher view, student view)`` pairs of the loss, in a fixed order."""
        return view_pairs(num_global, num_views)

    def sample_masks(self, *args: object, **kwargs: object) -> None:
        """No masks: the reference has no masked-patch term."""
        return None

    def plan(
        self,
        matches: Mapping[ViewPair, PatchMatches] | None,
        *args: object,
        **kwargs: object,
    ) -> Mapping[ViewPair, PatchMatches]:
        """The reference's plan of a batch is its matches (``{}`` without the patch term)."""
        return dict(matches or {})

    def forward(
        self,
        student_tokens: Sequence[Tensor],
        teacher_tokens: Sequence[Tensor],
        student_heads: HeadPair,
        teacher_heads: HeadPair,
        teacher_temp: float,
        *,
        plan: Mapping[ViewPair, PatchMatches] | None = None,
        matches: Mapping[ViewPair, PatchMatches] | None = None,
        teacher_local_tokens: Sequence[Tensor] = (),
        update_centre: bool = True,
    ) -> LocalGlobalOutput:
        """Loss of one batch.

        Args:
            student_tokens: per student view, ``(B, 1 + N_v, D)`` tokens, globals first.
            teacher_tokens: per global view, ``(B, 1 + N, D)`` teacher tokens.
            student_heads: student ``(CLS head, patch head)``.
            teacher_heads: teacher ``(CLS head, patch head)``.
            teacher_temp: teacher temperature ``T_t``.
            plan: the batch's matches as :meth:`plan` gives them (the same as ``matches``).
            matches: ``{(i, v): PatchMatches}`` for every pair of :meth:`view_pairs` (a pair
                of two global views may be given as ``(v, i)``); unused without the patch
                loss.
            teacher_local_tokens: must be empty (no local-local pairs).
            update_centre: afterwards, move the centre towards the teacher outputs of all
                tokens.

        Returns:
            :class:`~patchdino.losses.LocalGlobalOutput`.
        """
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be positive, got {teacher_temp}")
        if teacher_local_tokens:
            raise ValueError("the reference computation has no local-local pairs")
        matches = plan if plan is not None else matches
        num_global = len(teacher_tokens)
        pairs = self.view_pairs(num_global, len(student_tokens))
        patch_centre = self.centre if self.patch_centre is None else self.patch_centre
        # 1. Heads on every token: (B, K) CLS and (B, N_v, K') patch logits per view.
        student = [self._logits(t, student_heads) for t in student_tokens]
        with torch.no_grad():
            teacher = [self._logits(t, teacher_heads) for t in teacher_tokens]
            t_cls = [
                torch.softmax((_wide(c) - self.centre.centre[0]) / teacher_temp, dim=-1)
                for c, _ in teacher
            ]  # (B, K) each
            t_patch = [
                torch.softmax((_wide(p) - self._patch_centre(patch_centre, p)) / teacher_temp, -1)
                for _, p in teacher
                if self.patch_loss
            ]  # (B, N, K') each
        s_cls = [torch.log_softmax(_wide(c) / self.student_temp, dim=-1) for c, _ in student]
        s_patch = [
            torch.log_softmax(_wide(p) / self.student_temp, dim=-1)
            for _, p in student
            if self.patch_loss
        ]

        # 2. One cross-entropy per view pair over gathered copies of its matched tokens.
        total_cls = s_cls[0].new_zeros(())
        total_patch = s_cls[0].new_zeros(())
        counts = []
        for i, v in pairs:
            cls_ce = -(t_cls[i] * s_cls[v]).sum(dim=-1)  # (B,)
            if not self.patch_loss:
                total_cls = total_cls + cls_ce.mean()
                continue
            m = _pair(matches, i, v, num_global)
            width = t_patch[i].shape[-1]
            t = t_patch[i].gather(1, m.index_a[..., None].expand(-1, -1, width))  # (B, M, K')
            s = s_patch[v].gather(1, m.index_b[..., None].expand(-1, -1, width))  # (B, M, K')
            patch_ce = (-(t * s).sum(dim=-1) * m.valid).sum(dim=1)  # (B,)
            count = m.valid.sum(dim=1).to(patch_ce.dtype)  # (B,)
            counts.append(count)
            if self.cls_weighting == "token":
                total_cls = total_cls + (cls_ce / (1 + count)).mean()
                total_patch = total_patch + (patch_ce / (1 + count)).mean()
            else:
                total_cls = total_cls + self.cls_weight * cls_ce.mean()
                share = (1 - self.cls_weight) * patch_ce / count.clamp_min(1)
                total_patch = total_patch + share.mean()
        cls_loss, patch_loss = total_cls / len(pairs), total_patch / len(pairs)
        if update_centre:
            self._update_centres(teacher, patch_centre)
        matched = torch.stack(counts).mean() if counts else cls_loss.new_zeros(())
        return LocalGlobalOutput(
            loss=cls_loss + patch_loss,
            terms={"loss_cls": cls_loss.detach(), "loss_patch": patch_loss.detach()},
            statistics={"matched_patches": matched.detach()},
        )

    @staticmethod
    def _logits(tokens: Tensor, heads: HeadPair) -> tuple[Tensor, Tensor]:
        """``(B, K)`` CLS and ``(B, N, K')`` patch logits of ``(B, 1 + N, D)`` tokens."""
        cls_head, patch_head = heads
        if cls_head is patch_head:
            logits = _apply(cls_head, tokens)  # (B, 1 + N, K): the head on every token
            return logits[:, 0], logits[:, 1:]
        return _apply(cls_head, tokens[:, 0]), _apply(patch_head, tokens[:, 1:])

    @staticmethod
    def _patch_centre(centre: Centre, patch_logits: Tensor) -> Tensor:
        """``(N, K')`` centre rows of the patch positions of a global view."""
        positions = torch.arange(1, 1 + patch_logits.shape[1], device=patch_logits.device)
        return centre(centre.rows(positions, 0))

    @torch.no_grad()
    def _update_centres(self, teacher: Sequence[tuple[Tensor, Tensor]], patch: Centre) -> None:
        """EMA step of the centres from the teacher logits of every token (the reference)."""
        cls_logits = _wide(torch.cat([c for c, _ in teacher]))  # (G * B, K)
        sums, weights = self.centre.statistics(
            cls_logits, torch.zeros(cls_logits.shape[0], dtype=torch.long, device=cls_logits.device)
        )
        if self.patch_loss:
            logits = _wide(torch.cat([p for _, p in teacher]))  # (G * B, N, K')
            positions = torch.arange(1, 1 + logits.shape[1], device=logits.device)
            rows = patch.rows(positions, 0).expand(logits.shape[0], -1)  # (G * B, N)
            patch_sums, patch_weights = patch.statistics(logits.flatten(0, 1), rows.flatten())
            if patch is self.centre:
                sums, weights = sums + patch_sums, weights + patch_weights
            else:
                patch.update_from_statistics(patch_sums, patch_weights)
        self.centre.update_from_statistics(sums, weights)


def _apply(head: ProjectionHead, tokens: Tensor) -> Tensor:
    """``(..., D)`` tokens -> ``(..., K)`` logits of a head given in two stages."""
    return head.forward_bottleneck(tokens) @ head.last_layer_weight().T


def _wide(x: Tensor) -> Tensor:
    """``x`` in at least float32 (bf16 / fp16 logits are widened, float64 kept)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _pair(
    matches: Mapping[ViewPair, PatchMatches] | None, i: int, v: int, num_global: int
) -> PatchMatches:
    """Matches of teacher view ``i`` with student view ``v`` (a global pair may be swapped)."""
    if matches is None:
        raise ValueError("the patch loss needs matches for every view pair")
    found = matches.get((i, v))
    if found is None and v < num_global and (v, i) in matches:
        found = matches[(v, i)].swap()
    if found is None:
        raise ValueError(f"no matches for view pair (teacher {i}, student {v})")
    return found
