"""DINO's term: the teacher's CLS tokens distil into the student's CLS tokens of other views.

For each teacher view ``i`` and student view ``v != i``, one pair ``(CLS_i, CLS_v)``; its
weight comes from the pair plan (``1 / (1 + |matches|)`` per view pair with the ``token``
weighting, ``cls_weight`` with ``split``, ``1`` without the patch term), divided by the number
of view pairs and samples. With the patch term off this is exactly DINO's loss.
"""

from __future__ import annotations

from torch import Tensor

from patchdino.losses.terms.base import LossTerm, TermInputs


class ClsTerm(LossTerm):
    """CLS-to-CLS distillation over the view pairs of the plan."""

    name = "cls"

    def forward(self, inputs: TermInputs) -> Tensor:
        """Mean over view pairs and samples of the CLS pairs' cross-entropy."""
        return inputs.distill(inputs.plan.cls, patches=False)
