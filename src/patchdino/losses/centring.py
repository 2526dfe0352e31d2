"""What a centring of one problem's teacher logits offers the distillation implementations.

Two centrings exist: the EMA centre's (:class:`~patchdino.losses.centre.Centring`) and
Sinkhorn-Knopp's (:class:`~patchdino.losses.sinkhorn.SinkhornCentring`). Both subtract from
each raw teacher logit row a row of a small table: the EMA centre's rows (one per token
position, or one per token kind), or Sinkhorn-Knopp's one row of per-prototype offsets.
Implementations that materialise logits chunk by chunk call the centring on each chunk;
fused kernels take the table (:meth:`TeacherCentring.offsets`) and subtract it themselves.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class TeacherCentring(Protocol):
    """Centres a problem's teacher logits (EMA centre or Sinkhorn-Knopp)."""

    def prepare(self, features: Tensor, weight: Tensor, temperature: float) -> None:
        """See all ``(M, d)`` teacher features of the problem once, before any chunk."""
        ...

    def __call__(self, logits: Tensor, start: int, end: int) -> Tensor:
        """Centred ``(end - start, K)`` logits of teacher rows ``start:end``; each row is
        centred once, and it may overwrite ``logits``."""
        ...

    def offsets(self, features: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """What to subtract from the raw logits ``features @ weight.T``, as a table.

        In place of calls on every chunk: records what those calls would (the EMA
        centre's statistics of these logits).

        Args:
            features: ``(M, d)`` all the problem's teacher features.
            weight: ``(K, d)`` the teacher's last-layer weight.

        Returns:
            ``(R, K)`` table and ``(M,)`` long table row of each teacher row; the centred
            logits are ``features @ weight.T - table[rows]``.
        """
        ...
