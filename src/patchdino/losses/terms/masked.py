"""iBOT's term: hidden patches of the student's global views predict the teacher's.

The student sees each global view with some patches replaced by a learnt mask token
(:class:`~patchdino.losses.masks.BlockMasking` draws the masks, the backbone's
``mask_token`` fills them); the teacher sees the view whole. Each hidden student patch ``p``
of view ``v`` distils the teacher's patch ``p`` of the same view, with the patch head and
the patch centre (or Sinkhorn-Knopp); each masked view weighs the same
(:func:`~patchdino.losses.pairs.masked_plan`).

With the patch term on as well, hidden student patches keep taking part in matched pairs: a
hidden patch of one global view is then also asked for the teacher's output on the matching
patch of the other views, which it can only infer from its visible neighbours (the same kind
of prediction as this term's, across views).
"""

from __future__ import annotations

import torch
from torch import Tensor

from patchdino.losses.terms.base import LossTerm, TermInputs


class MaskedTerm(LossTerm):
    """Masked-patch prediction (iBOT) on the global views."""

    name = "masked"

    def forward(self, inputs: TermInputs) -> Tensor:
        """Mean over masked views of the mean cross-entropy of their hidden patches."""
        if inputs.plan.masked is None:
            raise ValueError("the masked term needs a plan made with masks")
        if inputs.plan.masked.student.num_rows == 0:
            return torch.zeros((), device=inputs.student_tokens[0].device)
        return inputs.distill(inputs.plan.masked, patches=True)
