"""One forward pass of the method: teacher and student over the views, then the loss."""

from __future__ import annotations

from torch import nn

from patchdino.data.batch import MultiCropBatch
from patchdino.losses import LocalGlobalLoss
from patchdino.losses.local_global import LocalGlobalOutput
from patchdino.losses.pairs import PairPlan
from patchdino.matching import match_patches
from patchdino.matching.types import PatchMatches
from patchdino.models import StudentTeacher


class PretrainStep(nn.Module):
    """Student-teacher model and loss as one module (the unit wrapped by DDP).

    Args:
        model: student and EMA teacher.
        loss: the local-global loss (holds the centre).
        matching: ``grid`` or ``nearest``.
        threshold: nearest mode's largest centre distance in coarser-patch units.
    """

    def __init__(
        self, model: StudentTeacher, loss: LocalGlobalLoss, matching: str, threshold: float
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.matching = matching
        self.threshold = threshold

    def plan(self, batch: MultiCropBatch) -> PairPlan:
        """Match the patches of every loss view pair from the batch geometry (on its device)."""
        geometry = batch.geometry
        num_global = len(batch.global_views)
        matches: dict[tuple[int, int], PatchMatches] | None = None
        if self.loss.patch_loss:
            matches = {
                (i, v): match_patches(geometry[i], geometry[v], self.matching, self.threshold)
                for i, v in self.loss.view_pairs(num_global, len(geometry))
            }
        num_tokens = [1 + g.num_patches for g in geometry]
        return self.loss.plan(matches, num_tokens, batch.batch_size, num_global)

    def forward(
        self, batch: MultiCropBatch, plan: PairPlan, teacher_temp: float
    ) -> LocalGlobalOutput:
        """Loss of ``batch`` with the matches of ``plan`` at teacher temperature ``teacher_temp``.

        Returns:
            The loss output (total, CLS and patch parts, mean matched patches per pair).
        """
        teacher = self.model.forward_teacher(batch.global_views)
        teacher_local = (
            self.model.forward_teacher(batch.local_views) if self.loss.local_local else []
        )
        student = self.model.forward_student(batch.views)
        return self.loss(
            student,
            teacher,
            plan,
            self.model.student.heads,
            self.model.teacher.heads,
            teacher_temp,
            teacher_local_tokens=teacher_local,
        )
