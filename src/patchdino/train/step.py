"""One forward pass of the method: teacher and student over the views, then the loss."""

from __future__ import annotations

import torch
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
        patch_pairs_per_view: keep at most this many randomly chosen matched patch pairs per
            ``(sample, view pair)`` (:func:`sample_matches`); 0 keeps all.
    """

    def __init__(
        self,
        model: StudentTeacher,
        loss: LocalGlobalLoss,
        matching: str,
        threshold: float,
        patch_pairs_per_view: int = 0,
    ) -> None:
        super().__init__()
        if patch_pairs_per_view < 0:
            raise ValueError(
                f"patch_pairs_per_view must be >= 0 (0 keeps all), got {patch_pairs_per_view}"
            )
        self.model = model
        self.loss = loss
        self.matching = matching
        self.threshold = threshold
        self.patch_pairs_per_view = patch_pairs_per_view

    def plan(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> PairPlan:
        """Match the patches of every loss view pair from the batch geometry (on its device).

        Args:
            batch: the views and their geometry.
            generator: source of the pair sampling of ``patch_pairs_per_view`` (on the
                geometry's device); None uses torch's global generator.
        """
        geometry = batch.geometry
        num_global = len(batch.global_views)
        matches: dict[tuple[int, int], PatchMatches] | None = None
        if self.loss.patch_loss:
            matches = {
                (i, v): sample_matches(
                    match_patches(geometry[i], geometry[v], self.matching, self.threshold),
                    self.patch_pairs_per_view,
                    generator,
                )
                for i, v in self.loss.view_pairs(num_global, len(geometry))
            }
        num_tokens = [1 + g.num_patches for g in geometry]
        return self.loss.plan(matches, num_tokens, batch.batch_size, num_global)

    def forward(
        self, batch: MultiCropBatch, plan: PairPlan, teacher_temp: float
    ) -> LocalGlobalOutput:
        """Loss of ``batch`` with the matches of ``plan`` at teacher temperature ``teacher_temp``.

        Returns:
            The loss output (total, named terms and statistics).
        """
        teacher = self.model.forward_teacher(batch.global_views)
        teacher_local = (
            self.model.forward_teacher(batch.local_views) if self.loss.local_local else []
        )
        student = self.model.forward_student(batch.views)
        return self.loss(
            student,
            teacher,
            self.model.student.heads,
            self.model.teacher.heads,
            teacher_temp,
            plan=plan,
            teacher_local_tokens=teacher_local,
        )


def sample_matches(
    matches: PatchMatches, limit: int, generator: torch.Generator | None = None
) -> PatchMatches:
    """At most ``limit`` valid pairs per sample, chosen uniformly at random without replacement.

    Every sample with more than ``limit`` valid pairs keeps a uniformly random subset of
    ``limit`` of them; samples with fewer keep all. One vectorised draw for the whole batch.

    Args:
        matches: ``(B, K)`` matched pairs.
        limit: largest number of pairs kept per sample; 0 keeps all.
        generator: source of randomness on the matches' device; None uses the global one.

    Returns:
        ``matches`` itself when ``limit`` is 0 or ``K <= limit``, else ``(B, limit)`` matches
        holding the chosen pairs (padding entries invalid).

    Raises:
        ValueError: for a negative ``limit``.
    """
    if limit < 0:
        raise ValueError(f"the pair limit must be >= 0 (0 keeps all), got {limit}")
    valid = matches.valid
    if limit == 0 or valid.shape[1] <= limit:
        return matches
    keys = torch.rand(valid.shape, generator=generator, device=valid.device)  # (B, K)
    keys = keys.masked_fill(~valid, 2.0)  # invalid entries sort after every valid one
    chosen = keys.topk(limit, dim=1, largest=False, sorted=False).indices  # (B, limit)
    return PatchMatches(
        matches.index_a.gather(1, chosen),
        matches.index_b.gather(1, chosen),
        valid.gather(1, chosen),
    )
