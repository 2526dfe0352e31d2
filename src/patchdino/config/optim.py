"""The ``optim`` section: optimisation and schedules (docs/method.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from patchdino.config.checks import positive_problems
from patchdino.config.section import Section

AdamWUpdate = Literal["foreach", "fused"]
"""How the AdamW update runs (:func:`patchdino.train.optim.build_optimizer`)."""


@dataclass
class OptimConfig(Section):
    """Optimisation and schedules (docs/method.md section 5)."""

    batch_size: int = 64
    """Images per step on one process (the global batch is this times the world size)."""
    epochs: int = 100
    """Pretraining epochs (run.max_steps, when given, counts instead)."""
    lr: float = 5e-4
    """Peak learning rate for a global batch of 256; scaled linearly by the global batch."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine schedule."""
    warmup_epochs: float = 10.0
    """Epochs of the linear learning-rate warm-up."""
    weight_decay: float = 0.04
    """AdamW weight decay at the start (cosine schedule; none on biases and norms)."""
    weight_decay_end: float = 0.4
    """AdamW weight decay at the end of the cosine schedule."""
    momentum_teacher: float = 0.996
    """Teacher EMA momentum at the start; it rises to 1 on a cosine."""
    clip_grad: float = 3.0
    """Gradient-norm clip per parameter tensor as in DINO; 0 disables."""
    freeze_last_layer: float = 1.0
    """Epochs during which the head's last layer is not updated."""
    accumulation: int = 1
    """Gradient accumulation steps per optimiser step."""
    adamw: AdamWUpdate = "foreach"
    """foreach: PyTorch's multi-tensor AdamW update (a few calls for all parameters) | fused:
    one fused kernel per parameter group (CUDA and CPU; its step counters live on the
    device, so it reads nothing back). The same arithmetic to float rounding."""

    def rules(self, prefix: str) -> list[str]:
        problems = positive_problems(
            {
                f"{prefix}{name}": getattr(self, name)
                for name in ("batch_size", "epochs", "accumulation")
            }
        )
        if self.weight_decay < 0 or self.weight_decay_end < 0:
            problems.append(
                f"{prefix}weight_decay and weight_decay_end must be >= 0, got "
                f"{self.weight_decay}, {self.weight_decay_end}"
            )
        if self.lr < 0 or self.min_lr < 0:  # lr 0 keeps the student as it starts
            problems.append(
                f"{prefix}lr and {prefix}min_lr must be >= 0, got {self.lr}, {self.min_lr}"
            )
        if not 0 <= self.momentum_teacher <= 1:
            problems.append(
                f"{prefix}momentum_teacher must lie in [0, 1], got {self.momentum_teacher}"
            )
        if self.warmup_epochs < 0 or self.freeze_last_layer < 0 or self.clip_grad < 0:
            problems.append(f"{prefix}warmup_epochs, freeze_last_layer and clip_grad must be >= 0")
        return problems
