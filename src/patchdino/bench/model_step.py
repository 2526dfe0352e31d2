"""One training step of a configuration on tensors already on the device.

The same work as one optimiser step of :class:`~patchdino.train.trainer.Trainer` without
data loading, views and matching, through the same functions
(:func:`~patchdino.train.step.forward_backward`, :func:`~patchdino.train.step.optimiser_step`):
teacher forward on the global views, student forward and backward on all views, the loss,
per-tensor gradient clipping, the AdamW step and the EMA update of the teacher.
"""

from __future__ import annotations

from typing import Any

import torch

from patchdino.bench.reference_loss import ReferenceLocalGlobalLoss
from patchdino.config import Config
from patchdino.data.batch import MultiCropBatch
from patchdino.losses import LocalGlobalLoss, LocalGlobalOutput, PairPlan
from patchdino.train.build import build_step
from patchdino.train.optim import build_optimizer
from patchdino.train.schedules import ScheduleValues
from patchdino.train.step import PretrainStep, forward_backward, optimiser_step


class TrainingStep:
    """Model, loss and optimiser of ``config`` on ``device``, stepping on given batches.

    Args:
        config: model, loss, optimiser and run settings (``run.precision``, ``run.compile``).
        device: where the model lives.
        in_chans: image channels.
        reference: compute the loss as the reference does (:class:`ReferenceLocalGlobalLoss`
            in the trainer's :class:`PretrainStep`).
    """

    def __init__(
        self, config: Config, device: torch.device, in_chans: int = 3, reference: bool = False
    ) -> None:
        step = build_step(config, in_chans, device)
        self.module = step
        if reference:
            assert isinstance(step.loss, LocalGlobalLoss)
            loss = ReferenceLocalGlobalLoss(step.loss).to(device)
            self.module = PretrainStep(
                step.model, loss, step.matching, step.threshold, step.patch_pairs_per_view
            )
        self.model = step.model
        self.module.train()
        self.config = config
        self.device = device
        self.optimizer = build_optimizer(self.model.student, config.optim.adamw)
        o = config.optim
        self.values = ScheduleValues(
            lr=o.lr * o.batch_size / 256,
            weight_decay=o.weight_decay,
            teacher_momentum=o.momentum_teacher,
            teacher_temp=config.loss.teacher_temp,
            freeze_last_layer=False,
        )

    def plan(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> Any:
        """What the step needs besides the views: a pair plan (or the reference's matches)."""
        return self.module.plan(batch, generator)

    def head_tokens(self, batch: MultiCropBatch, plan: Any) -> tuple[float, float]:
        """Tokens the heads run on per image: ``(student and teacher, student alone)``."""
        if isinstance(plan, PairPlan):
            problems = [p for p in (plan.cls, plan.patch) if p is not None]
            student = sum(p.student.num_rows for p in problems)
            teacher = sum(p.teacher.num_rows for p in problems)
            return (student + teacher) / batch.batch_size, student / batch.batch_size
        tokens = [1 + g.num_patches for g in batch.geometry]
        return float(sum(tokens) + sum(tokens[: len(batch.global_views)])), float(sum(tokens))

    def __call__(self, batch: MultiCropBatch, plan: Any) -> LocalGlobalOutput:
        """One optimiser step on ``batch``; returns the loss output (not synchronised)."""
        precision = self.config.run.precision
        out = forward_backward(self.module, batch, plan, self.values.teacher_temp, precision)
        optimiser_step(self.model, self.optimizer, self.values, self.config.optim.clip_grad)
        return out
