"""One forward pass with the reference's loss computation, shaped like :class:`PretrainStep`."""

from __future__ import annotations

import torch
from torch import nn

from patchdino.bench.reference_loss import ReferenceLocalGlobalLoss
from patchdino.data.batch import MultiCropBatch
from patchdino.losses import LocalGlobalOutput
from patchdino.losses.pairs import ViewPair
from patchdino.matching import match_patches
from patchdino.matching.types import PatchMatches
from patchdino.models import StudentTeacher
from patchdino.train.step import Phases, phase

Matches = dict[ViewPair, PatchMatches]
"""``{(teacher view, student view): PatchMatches}`` of every loss view pair."""


class ReferenceStep(nn.Module):
    """Student-teacher model with :class:`ReferenceLocalGlobalLoss` (a benchmark baseline).

    Args:
        model: student and EMA teacher.
        loss: the reference loss computation.
        matching: ``grid`` or ``nearest``.
        threshold: nearest mode's largest centre distance in coarser-patch units.
    """

    def __init__(
        self,
        model: StudentTeacher,
        loss: ReferenceLocalGlobalLoss,
        matching: str,
        threshold: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.matching = matching
        self.threshold = threshold

    def plan(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> Matches:
        """Matches of every loss view pair from the batch geometry (``generator`` is unused)."""
        geometry = batch.geometry
        if not self.loss.patch_loss:
            return {}
        return {
            (i, v): match_patches(geometry[i], geometry[v], self.matching, self.threshold)
            for i, v in self.loss.view_pairs(len(batch.global_views), len(geometry))
        }

    def forward(
        self,
        batch: MultiCropBatch,
        matches: Matches,
        teacher_temp: float,
        phases: Phases | None = None,
    ) -> LocalGlobalOutput:
        """Loss of ``batch`` with ``matches`` at teacher temperature ``teacher_temp``.

        Args:
            phases: wraps the phases ``teacher forward``, ``student forward`` and ``loss``.
        """
        with phase(phases, "teacher forward"):
            teacher = self.model.forward_teacher(batch.global_views)
        with phase(phases, "student forward"):
            student = self.model.forward_student(batch.views)
        with phase(phases, "loss"):
            return self.loss(
                student,
                teacher,
                self.model.student.heads,
                self.model.teacher.heads,
                teacher_temp,
                matches=matches,
            )
