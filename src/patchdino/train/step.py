"""One training step of the method.

:class:`PretrainStep` is the forward pass (teacher and student over the views, then the loss),
the unit wrapped by DDP. A step of the trainer is :func:`forward_backward` once per
micro-batch, then :func:`optimiser_step`:

    forward_backward: teacher forward -> student forward -> loss -> backward
    optimiser_step:   gradient clipping -> last-layer freezing -> AdamW step -> EMA update

Both take an optional :data:`Phases` that wraps each phase (e.g. to time it); without one
they run straight through.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from patchdino.config import Config
from patchdino.config.checks import pair_limit_problem
from patchdino.data.batch import MultiCropBatch
from patchdino.losses import LocalGlobalLoss
from patchdino.losses.local_global import LocalGlobalOutput
from patchdino.losses.pairs import PairPlan
from patchdino.matching import match_patches
from patchdino.matching.types import PatchMatches
from patchdino.models import StudentTeacher
from patchdino.precision import autocast_for
from patchdino.train.optim import apply_schedule, cancel_last_layer_gradients, clip_gradients
from patchdino.train.schedules import ScheduleValues

Phases = Callable[[str], contextlib.AbstractContextManager[Any]]
"""``phases(name)`` is a context manager around the phase ``name`` of a step."""


class StepLoss(Protocol):
    """What the step needs of its loss (:class:`LocalGlobalLoss`, or the benchmark's
    computation of it the reference's way, whose plan is the batch's matches)."""

    @property
    def patch_loss(self) -> bool: ...

    @property
    def local_local(self) -> bool: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def view_pairs(self, num_global: int, num_views: int) -> list[tuple[int, int]]: ...

    def sample_masks(
        self,
        num_global: int,
        batch_size: int,
        grid: tuple[int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> list[torch.Tensor] | None: ...

    def plan(
        self,
        matches: dict[tuple[int, int], PatchMatches] | None,
        num_tokens: list[int],
        batch_size: int,
        num_global: int,
        *,
        masks: list[torch.Tensor] | None = None,
    ) -> Any: ...

    def __call__(
        self,
        student_tokens: list[torch.Tensor],
        teacher_tokens: list[torch.Tensor],
        student_heads: Any,
        teacher_heads: Any,
        teacher_temp: float,
        *,
        plan: Any,
        teacher_local_tokens: list[torch.Tensor],
    ) -> LocalGlobalOutput: ...


def phase(phases: Phases | None, name: str) -> contextlib.AbstractContextManager[Any]:
    """``phases(name)``, or a context manager that does nothing when ``phases`` is None."""
    return contextlib.nullcontext() if phases is None else phases(name)


class PretrainStep(nn.Module):
    """Student-teacher model and loss as one module (the unit wrapped by DDP).

    Args:
        model: student and EMA teacher.
        loss: the local-global loss (holds the centre); any :class:`StepLoss`.
        matching: ``grid`` or ``nearest``.
        threshold: nearest mode's largest centre distance in coarser-patch units.
        patch_pairs_per_view: keep at most this many randomly chosen matched patch pairs per
            ``(sample, view pair)`` (:func:`sample_matches`); 0 keeps all.
    """

    def __init__(
        self,
        model: StudentTeacher,
        loss: StepLoss,
        matching: str,
        threshold: float,
        patch_pairs_per_view: int = 0,
    ) -> None:
        super().__init__()
        problem = pair_limit_problem("patch_pairs_per_view", patch_pairs_per_view)
        if problem is not None:
            raise ValueError(problem)
        self.model = model
        self.loss = loss
        self.matching = matching
        self.threshold = threshold
        self.patch_pairs_per_view = patch_pairs_per_view

    @classmethod
    def from_config(cls, config: Config, in_chans: int) -> PretrainStep:
        """The model, loss and matching of ``config`` (weights from the global generator)."""
        patch = config.loss.terms.patch
        return cls(
            StudentTeacher.from_config(config, in_chans),
            LocalGlobalLoss.from_config(config),
            patch.matching,
            patch.match_threshold,
            patch_pairs_per_view=patch.pairs_per_view,
        )

    def plan(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> Any:
        """Match the patches of every loss view pair from the batch geometry (on its device):
        the loss's plan of the batch (a :class:`PairPlan` for :class:`LocalGlobalLoss`).

        With the masked term, the masks of the global views are drawn here too, after the
        pair sampling and from the same generator, so that a resumed run draws them again.

        Args:
            batch: the views and their geometry.
            generator: source of the pair sampling of ``patch_pairs_per_view`` and of the
                masks (on the geometry's device); None uses torch's global generator.
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
        side = geometry[0].grid
        masks = self.loss.sample_masks(
            num_global, batch.batch_size, (side, side), generator, geometry[0].boxes.device
        )
        return self.loss.plan(matches, num_tokens, batch.batch_size, num_global, masks=masks)

    def forward(
        self,
        batch: MultiCropBatch,
        plan: Any,
        teacher_temp: float,
        phases: Phases | None = None,
        defer_centre: bool = False,
    ) -> LocalGlobalOutput:
        """Loss of ``batch`` with the matches of ``plan`` at teacher temperature ``teacher_temp``.

        Args:
            batch: the views, ``(B, C, H_v, W_v)`` each, globals first.
            plan: the batch's pair plan (:meth:`plan`): a :class:`PairPlan`, or what the
                loss's own ``plan`` gives (the reference computation's matches).
            teacher_temp: teacher temperature of this step.
            phases: wraps the phases ``teacher forward``, ``student forward`` and ``loss``.
            defer_centre: return the EMA centre's update in the output instead of making it
                (:attr:`LocalGlobalOutput.centre_update`).

        Returns:
            The loss output (total, named terms and statistics).
        """
        with phase(phases, "teacher forward"):
            teacher = self.model.forward_teacher(batch.global_views)
            teacher_local = (
                self.model.forward_teacher(batch.local_views) if self.loss.local_local else []
            )
        with phase(phases, "student forward"):
            masks = plan.masks if isinstance(plan, PairPlan) else None
            student = self.model.forward_student(batch.views, masks)
        with phase(phases, "loss"):
            return self.loss(
                student,
                teacher,
                self.model.student.heads,
                self.model.teacher.heads,
                teacher_temp,
                plan=plan,
                teacher_local_tokens=teacher_local,
                **({"defer_centre": True} if defer_centre else {}),
            )


def forward_backward(
    forward: nn.Module,
    batch: MultiCropBatch,
    plan: Any,
    teacher_temp: float,
    precision: str,
    *,
    accumulation: int = 1,
    sync: bool = True,
    phases: Phases | None = None,
    apply_centre: bool = True,
) -> LocalGlobalOutput:
    """Loss of one (micro-)batch and the backward pass of it divided by ``accumulation``.

    The forward pass runs under :func:`~patchdino.precision.autocast_for` of
    ``precision`` on the batch's device; gradients add to those already there.

    Args:
        forward: a :class:`PretrainStep`, the same in :class:`DistributedDataParallel`, or a
            module with the same forward (the benchmark's reference step).
        batch: the views, on the model's device.
        plan: what ``forward`` needs besides the views (a :class:`PairPlan`).
        teacher_temp: teacher temperature of this step.
        precision: ``run.precision``.
        accumulation: micro-batches of the optimiser step; their gradients add up to those of
            the mean loss.
        sync: under DDP, average the gradients over processes in this backward pass (False
            for all but the last micro-batch of an accumulated step); ignored without DDP.
        phases: wraps the forward phases (see :meth:`PretrainStep.forward`) and ``backward``.
        apply_centre: move the EMA centre during the forward pass (False: the output's
            ``centre_update`` holds the move, its reduction across processes running during
            the backward pass, for the caller to apply once the optimiser step is taken).

    Returns:
        The loss output; ``loss`` is not divided.
    """
    device = batch.views[0].device
    no_sync = not sync and isinstance(forward, DistributedDataParallel)
    with forward.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
        with autocast_for(precision, device):
            defer = {} if apply_centre else {"defer_centre": True}
            out: LocalGlobalOutput = forward(batch, plan, teacher_temp, phases=phases, **defer)
        with phase(phases, "backward"):
            (out.loss / accumulation).backward()
    return out


def optimiser_step(
    model: StudentTeacher,
    optimizer: torch.optim.Optimizer,
    values: ScheduleValues,
    clip_grad: float,
    phases: Phases | None = None,
) -> float:
    """Update the student from its gradients, then the teacher from the student.

    Writes the step's learning rate and weight decay into ``optimizer``, clips each gradient
    tensor to ``clip_grad`` (:func:`~patchdino.train.optim.clip_gradients`), drops the heads'
    last-layer gradients while ``values.freeze_last_layer``, steps the optimiser and moves the
    teacher towards the student with momentum ``values.teacher_momentum``. When the gradient
    norm is not finite, nothing is updated. Gradients are dropped in both cases.

    Args:
        phases: wraps the phases ``clip``, ``optimiser`` and ``ema``.

    Returns:
        The gradient norm before clipping (not finite when the step was not taken).
    """
    student = model.student
    with phase(phases, "clip"):
        grad_norm = clip_gradients(student.parameters(), clip_grad)
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return grad_norm
    with phase(phases, "optimiser"):
        if values.freeze_last_layer:
            cancel_last_layer_gradients(h.last_layer for h in set(student.heads))
        apply_schedule(optimizer, values)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    with phase(phases, "ema"):
        model.update_teacher(values.teacher_momentum)
    return grad_norm


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
    problem = pair_limit_problem("the pair limit", limit)
    if problem is not None:
        raise ValueError(problem)
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
