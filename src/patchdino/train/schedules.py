"""Hyper-parameter schedules as pure functions of the optimiser step.

Steps are 0-based here (step 0 is the first optimiser step). Nothing is precomputed or
stored, so resuming at any step gives exactly the values of an uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from patchdino.config import Config


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``), then ``end``."""
    if total <= 0 or step >= total:
        return end
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total))


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine to ``final``."""
    if step < warmup:
        return peak * step / warmup
    return cosine(step - warmup, total - warmup, peak, final)


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """Linear from ``start`` to ``end`` over ``warmup`` steps, then ``end``."""
    if step >= warmup:
        return end
    return start + (end - start) * step / warmup


@dataclass(frozen=True)
class ScheduleValues:
    """Every scheduled value at one step."""

    lr: float
    weight_decay: float
    teacher_momentum: float
    teacher_temp: float
    freeze_last_layer: bool


@dataclass(frozen=True)
class Schedules:
    """The run's schedules, fixed by the config and the run length.

    Attributes:
        total_steps: optimiser steps in the whole run.
        steps_per_epoch: optimiser steps per pass over the data.
        peak_lr: learning rate after warm-up, already scaled by the global batch.
    """

    total_steps: int
    steps_per_epoch: int
    peak_lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    weight_decay_end: float
    momentum_teacher: float
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_teacher_temp_steps: int
    freeze_last_layer_steps: int

    @classmethod
    def from_config(cls, config: Config, steps_per_epoch: int, world_size: int = 1) -> Schedules:
        """Schedules for ``config`` with ``steps_per_epoch`` optimiser steps per epoch.

        The peak learning rate is ``optim.lr * global_batch / 256`` where the global batch is
        ``batch_size * accumulation * world_size`` (DINO's linear scaling rule).
        """
        o, lo = config.optim, config.loss
        steps_per_epoch = max(1, steps_per_epoch)
        total = config.run.max_steps or o.epochs * steps_per_epoch
        global_batch = o.batch_size * o.accumulation * world_size
        return cls(
            total_steps=total,
            steps_per_epoch=steps_per_epoch,
            peak_lr=o.lr * global_batch / 256.0,
            min_lr=o.min_lr,
            warmup_steps=min(round(o.warmup_epochs * steps_per_epoch), total),
            weight_decay=o.weight_decay,
            weight_decay_end=o.weight_decay_end,
            momentum_teacher=o.momentum_teacher,
            teacher_temp=lo.teacher_temp,
            warmup_teacher_temp=lo.warmup_teacher_temp,
            warmup_teacher_temp_steps=min(lo.warmup_teacher_temp_epochs * steps_per_epoch, total),
            freeze_last_layer_steps=round(o.freeze_last_layer * steps_per_epoch),
        )

    def at(self, step: int) -> ScheduleValues:
        """Values for 0-based optimiser ``step``."""
        return ScheduleValues(
            lr=warmup_cosine(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr),
            weight_decay=cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end),
            teacher_momentum=cosine(step, self.total_steps, self.momentum_teacher, 1.0),
            teacher_temp=linear_warmup(
                step, self.warmup_teacher_temp_steps, self.warmup_teacher_temp, self.teacher_temp
            ),
            freeze_last_layer=step < self.freeze_last_layer_steps,
        )
