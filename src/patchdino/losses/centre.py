"""Centre of the teacher outputs: an exponential moving average subtracted before sharpening.

Token positions follow the view layout: position 0 is CLS, position ``1 + p`` is patch ``p``.
Two modes:

- ``"position"`` (the reference): one centre per token position, ``1 + N`` rows for a view of
  ``N`` patches. When the teacher also runs on local views, their patch positions get rows of
  their own after the global ones (``1 + N_global + N_local`` rows).
- ``"shared"`` (as in iBOT): row 0 for CLS, row 1 shared by every patch position.

Updates use masked means: each row is moved towards the mean of the teacher outputs observed
at its positions in this batch, and rows with no observation keep their value (they do not
decay towards zero). Where the teacher head runs only on matched tokens, a patch position that
no pair used in a batch is therefore left unchanged.

The statistics are kept in the head's bottleneck space, not as logits: the last layer has no
bias, so the mean teacher logit of a row is ``W_t`` times the row's mean bottleneck feature.
A batch's :class:`CentreUpdate` therefore holds per centre an ``(R, d)`` feature sum and
``(R,)`` counts (``d`` = 256 in the paper's head, against ``K`` = 65,536 logits), all-reduced
under ``torch.distributed`` (asynchronously: started when the loss is computed, waited for when
the update is applied, so that it overlaps the backward pass) and mapped through ``W_t`` once.
A step that is not taken drops its update; nothing is cloned to undo it. Without an
initialised process group the reduction is skipped.

Which teacher tokens feed the statistics (``loss.centre_tokens``):

- ``"matched"``: the teacher tokens that take part in some pair, whose logits the loss
  computes anyway (every CLS token, the matched patch tokens).
- ``"all"`` (the reference): every token of every view the teacher ran on. The loss then
  also runs the teacher head, without gradients, on the patch tokens no pair used, for these
  statistics only (:meth:`Centring.observe_features`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from patchdino.config.checks import literal_values, momentum_problem
from patchdino.config.loss import CentreMode, CentreTokens

CENTRE_MODES: tuple[str, ...] = literal_values(CentreMode) or ()
"""``loss.centre`` values."""
CENTRE_TOKENS: tuple[str, ...] = literal_values(CentreTokens) or ()
"""``loss.centre_tokens`` values: which teacher tokens the centre statistics average."""


class Centre(nn.Module):
    """EMA of teacher logits, per token position or per token kind.

    Args:
        out_dim: width ``K`` of the teacher outputs.
        num_patches: patch tokens per view of each view kind (global, then local), used by the
            ``"position"`` mode; 0 (or empty) for a centre that only serves CLS tokens.
        mode: ``"position"`` or ``"shared"``.
        momentum: EMA momentum; the new value is ``momentum * old + (1 - momentum) * mean``.

    Attributes:
        centre: ``(R, K)`` buffer, zeros at start.
    """

    centre: Tensor

    def __init__(
        self,
        out_dim: int,
        num_patches: int | Sequence[int] = 0,
        mode: str = "position",
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if mode not in CENTRE_MODES:
            raise ValueError(f"centre mode must be one of {CENTRE_MODES}, got {mode!r}")
        problem = momentum_problem("centre momentum", momentum)
        if problem is not None:
            raise ValueError(problem)
        counts = [num_patches] if isinstance(num_patches, int) else list(num_patches)
        if any(n < 0 for n in counts):
            raise ValueError(f"num_patches must be non-negative, got {counts}")
        self.mode = mode
        self.momentum = momentum
        self.num_patches = tuple(counts)
        offsets = [0]
        for n in counts[:-1]:
            offsets.append(offsets[-1] + n)
        self._offsets = tuple(offsets)
        has_patches = sum(counts) > 0
        rows = 1 + sum(counts) if mode == "position" else 1 + int(has_patches)
        self.register_buffer("centre", torch.zeros(rows, out_dim))

    @property
    def num_rows(self) -> int:
        return int(self.centre.shape[0])

    def rows(self, positions: Tensor, kind: int | Tensor = 0) -> Tensor:
        """Rows of the centre used by tokens at ``positions`` of views of kind ``kind``.

        Args:
            positions: long tensor of token positions (0 = CLS), any shape.
            kind: view kind, an index into ``num_patches`` (0 = global, 1 = local), or a long
                tensor of kinds shaped like ``positions``.

        Returns:
            Long tensor of row indices, same shape as ``positions``.
        """
        is_patch = (positions > 0).long()
        if self.mode == "shared":
            return is_patch
        if isinstance(kind, Tensor):  # a CLS token's kind needs no rows (CLS-only centre)
            kind = torch.where(is_patch.bool(), kind, torch.zeros_like(kind))
            offsets = torch.as_tensor(self._offsets, device=positions.device)[kind]
            return positions + is_patch * offsets
        if not 0 <= kind < len(self.num_patches):
            raise ValueError(f"view kind {kind} has no centre rows (kinds: {self.num_patches})")
        return positions + is_patch * self._offsets[kind]

    def forward(self, rows: Tensor) -> Tensor:
        """Centre values ``(*rows.shape, K)`` of the given rows."""
        return self.centre[rows]

    def centring(self, positions: Tensor, kinds: int | Tensor, patches: bool) -> Centring:
        """A :class:`Centring` of one batch's teacher tokens, all CLS or all patch tokens.

        Args:
            positions: ``(M,)`` token positions (0 = CLS), in the order the logits will come.
            kinds: view kind of each token (see :meth:`rows`).
            patches: the tokens are patch tokens (else CLS tokens). CLS tokens, and patch
                tokens under the ``"shared"`` mode, all use one row, which is subtracted by
                broadcasting instead of gathering a row per token.
        """
        row = (1 if self.mode == "shared" else None) if patches else 0
        return Centring(self, self.rows(positions, kinds), row)

    @torch.no_grad()
    def statistics(
        self, teacher_logits: Tensor, rows: Tensor, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-row weighted sums and weights of a batch of teacher logits.

        Args:
            teacher_logits: ``(M, K)`` raw (uncentred) teacher logits.
            rows: ``(M,)`` centre row of each, from :meth:`rows`.
            weights: ``(M,)`` non-negative weights, or None for 1 each.

        Returns:
            ``(R, K)`` sums and ``(R,)`` total weights, in the centre's dtype.
        """
        dtype = self.centre.dtype
        sums = torch.zeros_like(self.centre)
        w = torch.ones(rows.shape, dtype=dtype, device=rows.device) if weights is None else weights
        w = w.to(dtype)
        sums.index_add_(0, rows, teacher_logits.to(dtype) * w[:, None])
        counts = torch.zeros(self.num_rows, dtype=dtype, device=rows.device)
        counts.index_add_(0, rows, w)
        return sums, counts

    @torch.no_grad()
    def update_from_statistics(self, sums: Tensor, counts: Tensor) -> None:
        """EMA step from per-row sums ``(R, K)`` and weights ``(R,)`` (all-reduced if needed).

        Rows whose total weight is zero on every process keep their value.
        """
        if _reducing():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        self.step(sums, counts)

    @torch.no_grad()
    def step(self, sums: Tensor, counts: Tensor) -> None:
        """EMA step from per-row sums ``(R, K)`` and weights ``(R,)`` already summed over
        every process; rows of total weight zero keep their value."""
        seen = counts > 0  # (R,)
        mean = sums / counts.clamp_min(torch.finfo(counts.dtype).tiny)[:, None]  # (R, K)
        updated = self.centre * self.momentum + mean * (1.0 - self.momentum)
        self.centre.copy_(torch.where(seen[:, None], updated, self.centre))

    @torch.no_grad()
    def update_from(self, centrings: Sequence[Centring], weight: Tensor) -> None:
        """EMA step from the statistics that centrings of this centre collected in one batch.

        Args:
            centrings: this centre's centrings of the batch.
            weight: ``(K, d)`` the teacher's last-layer weight that made their logits.
        """
        CentreUpdate([(self, centrings, weight)]).apply()

    @torch.no_grad()
    def update(
        self,
        teacher_logits: Tensor,
        positions: Tensor,
        kind: int = 0,
        weights: Tensor | None = None,
    ) -> None:
        """EMA step from teacher logits at token positions.

        Args:
            teacher_logits: ``(M, K)`` raw teacher logits.
            positions: ``(M,)`` token positions (0 = CLS) in views of kind ``kind``.
            kind: view kind (0 = global, 1 = local).
            weights: ``(M,)`` optional non-negative weights of the masked mean.
        """
        sums, counts = self.statistics(teacher_logits, self.rows(positions, kind), weights)
        self.update_from_statistics(sums, counts)


class Centring:
    """Centres one batch's teacher logits chunk by chunk and collects the centre's statistics.

    Made by :meth:`Centre.centring` for ``M`` teacher tokens. :meth:`prepare` (or
    :meth:`observe_features`, range by range) takes their ``(M, d)`` bottleneck features and
    sums them per centre row; each call then subtracts the tokens' centre rows from a range
    of their raw logits. :attr:`features` and :attr:`counts` are the batch's statistics for a
    :class:`CentreUpdate`: the raw logits' per-row sums are ``features @ W_t.T``.

    Attributes:
        centre: the centre whose values are subtracted.
        features: ``(R, d)`` sums of the bottleneck features seen so far, per centre row
            (None before any).
        counts: ``(R,)`` number of the ``M`` tokens per centre row (all tokens, from the start).
    """

    def __init__(self, centre: Centre, rows: Tensor, row: int | None) -> None:
        self.centre = centre
        self._rows = rows  # (M,)
        self._row = row
        self.features: Tensor | None = None
        with torch.no_grad():
            dtype = centre.centre.dtype
            ones = torch.ones_like(rows, dtype=dtype)
            self.counts = ones.new_zeros(centre.num_rows).index_add_(0, rows, ones)

    def prepare(self, features: Tensor, weight: Tensor, temperature: float) -> None:
        """Sum the ``(M, d)`` teacher features of all the tokens per centre row (the
        statistics); the EMA centre itself is known before the batch (unlike
        :class:`~patchdino.losses.sinkhorn.SinkhornCentring`)."""
        self.observe_features(features, 0, features.shape[0])

    @torch.no_grad()
    def __call__(self, logits: Tensor, start: int, end: int) -> Tensor:
        """Centred ``(end - start, K)`` logits of tokens ``start:end``, in the centre's dtype.

        Args:
            logits: ``(end - start, K)`` raw teacher logits of those tokens; overwritten when
                already in the centre's dtype.
        """
        logits = logits.to(self.centre.centre.dtype)
        if self._row is None:
            return logits.sub_(self.centre(self._rows[start:end]))
        return logits.sub_(self.centre.centre[self._row])

    @torch.no_grad()
    def offsets(self, features: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """The centre's ``(R, K)`` rows and each token's row (the statistics come from
        :meth:`prepare`)."""
        rows = self._rows if self._row is None else torch.full_like(self._rows, self._row)
        return self.centre.centre, rows

    @torch.no_grad()
    def observe_features(self, features: Tensor, start: int, end: int) -> None:
        """Add the bottleneck features of tokens ``start:end`` to :attr:`features` (their
        logits are ``features @ W_t.T``; the :class:`CentreUpdate` maps the sums through it).

        Args:
            features: ``(end - start, d)`` bottleneck features of those tokens.
        """
        dtype = self.centre.centre.dtype
        features = features.to(dtype)
        if self.features is None:
            self.features = features.new_zeros(self.centre.num_rows, features.shape[1])
        if self._row is None:
            self.features.index_add_(0, self._rows[start:end], features)
        else:
            self.features[self._row] += features.sum(dim=0)


def _reducing() -> bool:
    """Whether statistics are summed over processes (an initialised process group)."""
    return dist.is_available() and dist.is_initialized()


class CentreUpdate:
    """One batch's EMA centre updates, reduced across processes and applied later, or dropped.

    Made when the loss is computed: the statistics of every centre (its centrings' summed
    ``(R, d)`` features and ``(R,)`` counts, :class:`Centring`) go into one flat buffer whose
    all-reduce starts at once (asynchronously) under ``torch.distributed``. :meth:`apply` waits
    for it and moves each centre; :meth:`discard` waits and drops it (a skipped step).

    Args:
        parts: per centre, its centrings of the batch and the ``(K, d)`` last-layer weight of
            the teacher head that made their logits (one head per centre).
        reduce: sum over processes when a process group is initialised.

    Attributes:
        nbytes: bytes of the buffer all-reduced (0 without a process group).
    """

    def __init__(
        self,
        parts: Sequence[tuple[Centre, Sequence[Centring], Tensor]],
        reduce: bool = True,
    ) -> None:
        for centre, centrings, _ in parts:
            if not centrings or any(c.centre is not centre for c in centrings):
                raise ValueError("a centre update needs centrings, all of their centre")
            if any(c.features is None for c in centrings):
                raise ValueError("a centring saw no features (prepare was not called)")
        self._parts = [(centre, weight.detach()) for centre, _, weight in parts]
        with torch.no_grad():
            pieces = []
            for _, centrings, _ in parts:
                seen = [c.features for c in centrings if c.features is not None]
                features = torch.stack(seen).sum(0)  # (R, d)
                counts = torch.stack([c.counts for c in centrings]).sum(0)
                pieces.append(torch.cat([features, counts[:, None]], dim=1))  # (R, d + 1)
            self._shapes = [piece.shape for piece in pieces]
            self._flat = torch.cat([piece.flatten() for piece in pieces])
        reducing = reduce and _reducing()
        self._work = dist.all_reduce(self._flat, async_op=True) if reducing else None
        self.nbytes = self._flat.numel() * self._flat.element_size() if reducing else 0
        self._done = False

    def _wait(self) -> None:
        if self._done:
            raise RuntimeError("this centre update was already applied or discarded")
        self._done = True
        if self._work is not None:
            self._work.wait()

    @torch.no_grad()
    def statistics(self) -> list[tuple[Centre, Tensor, Tensor]]:
        """Wait for the reduction; per centre the ``(R, K)`` logit sums and ``(R,)`` counts."""
        self._wait()
        out = []
        for (centre, weight), piece in zip(
            self._parts, self._flat.split([math.prod(s) for s in self._shapes])
        ):
            table = piece.view(-1, weight.shape[1] + 1)
            sums = table[:, :-1] @ weight.to(table.dtype).T  # (R, K): logits are linear
            out.append((centre, sums, table[:, -1]))
        return out

    def apply(self) -> None:
        """Wait for the reduction and move every centre (see :meth:`Centre.step`)."""
        apply_updates([self])

    def discard(self) -> None:
        """Wait for the reduction (every process takes part in it) and drop the update."""
        self._wait()


@torch.no_grad()
def apply_updates(updates: Sequence[CentreUpdate]) -> None:
    """One EMA step per centre from the summed statistics of ``updates`` (the micro-batches
    of one optimiser step, as one batch of all their images)."""
    totals: dict[Centre, tuple[Tensor, Tensor]] = {}
    for update in updates:
        for centre, sums, counts in update.statistics():
            if centre in totals:
                old_sums, old_counts = totals[centre]
                sums, counts = old_sums + sums, old_counts + counts
            totals[centre] = (sums, counts)
    for centre, (sums, counts) in totals.items():
        centre.step(sums, counts)
