"""The ``model`` section: backbone and projection heads (docs/method.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from patchdino.config.checks import fraction_problem, positive_problems, registers_problem
from patchdino.config.section import Section

PatchHead = Literal["shared", "separate"]
"""shared: patches use the CLS head (the paper) | separate: a head of their own."""


@dataclass
class ModelConfig(Section):
    """Backbone and projection heads (docs/method.md section 3)."""

    arch: str = "vit_small_patch16_224"
    """A timm ViT name, or one of patchdino's small custom sizes."""
    patch_size: int = 16
    """ViT patch side in pixels."""
    registers: int | None = None
    """Register tokens (Darcet et al. 2024), never matched nor distilled; null keeps the
    arch's own (4 for timm's ``*_reg4_*`` names, else 0)."""
    drop_path: float = 0.1
    """Stochastic depth rate of the student backbone, in [0, 1)."""
    out_dim: int = 65536
    """Output width K of the DINO head (prototypes)."""
    hidden_dim: int = 2048
    """Hidden width of the head's MLP."""
    bottleneck_dim: int = 256
    """Width of the head's L2-normalised bottleneck."""
    norm_last_layer: bool = True
    """Fix the row norms of the head's last layer to 1 (DINO's default)."""
    patch_head: PatchHead = "shared"
    """shared: patches use the CLS head (the paper); separate: a head of their own."""
    patch_out_dim: int = 65536
    """Output width of the separate patch head."""

    def rules(self, prefix: str) -> list[str]:
        problems = positive_problems(
            {
                f"{prefix}{name}": getattr(self, name)
                for name in ("out_dim", "hidden_dim", "bottleneck_dim", "patch_out_dim")
            }
        )
        drop_path = fraction_problem(f"{prefix}drop_path", self.drop_path, closed=False)
        if drop_path:
            problems.append(drop_path)
        registers = registers_problem(f"{prefix}registers", self.registers)
        if registers:
            problems.append(registers)
        return problems
