"""The paper's term: matched patches of different views distil into each other.

For each view pair ``(i, v)`` of the plan and each matched patch pair ``(a, b)`` found by the
geometric matching (teacher patch ``a`` of view ``i``, student patch ``b`` of view ``v``),
``CE(softmax(centred(t_a) / T_t), log_softmax(s_b / T_s))`` with the plan's pair weight
(``1 / (1 + |matches|)`` with the ``token`` weighting: CLS is one pair among ``1 + |matches|``;
``(1 - cls_weight) / |matches|`` with ``split``), divided by the number of view pairs and
samples. The patch tokens use the patch head (the CLS head when it is shared).
"""

from __future__ import annotations

from torch import Tensor

from patchdino.losses.terms.base import LossTerm, TermInputs


class PatchTerm(LossTerm):
    """Distillation between geometrically matched patches of different views."""

    name = "patch"

    def forward(self, inputs: TermInputs) -> Tensor:
        """The matched patch pairs' weighted cross-entropy."""
        if inputs.plan.patch is None:
            raise ValueError("the patch term needs a plan made with the patch loss")
        return inputs.distill(inputs.plan.patch, patches=True)
