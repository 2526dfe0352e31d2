"""The ``run`` section: run-time settings (device, precision, steps, saving, logging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from patchdino.config.checks import positive_problems
from patchdino.config.section import Section

Precision = Literal["auto", "fp32", "bf16"]
"""auto: bf16 autocast on CUDA and fp32 elsewhere (:mod:`patchdino.precision`)."""
NonFinitePolicy = Literal["stop", "skip"]
"""What to do with a non-finite loss."""
PipelineMode = Literal["auto", "ahead", "serial"]
"""Whether each step's inputs are made one step ahead, beside the model step, or in it."""


def device_problem(key: str, device: str) -> str | None:
    """Why ``device`` is not auto, cpu, cuda or cuda:N, or None when it is one of them."""
    if device in ("auto", "cpu", "cuda") or device.startswith("cuda:"):
        return None
    return f"{key} '{device}' is not auto, cpu, cuda or cuda:N"


@dataclass
class RunConfig(Section):
    """Run-time settings."""

    seed: int = 0
    """Seed of the weights, the views, the matching samples and the masks."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    precision: Precision = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16."""
    max_steps: int | None = None
    """Total optimiser steps; None runs ``optim.epochs`` epochs."""
    save_every: int = 1000
    """Optimiser steps between checkpoints (and at the end)."""
    dist_timeout: float = 600.0
    """Seconds a process waits for the others in a collective (gradient all-reduce, barrier)
    before it stops the run: a hung or dead process then ends the job instead of holding it
    forever. Only under torchrun."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the run folder, the newest (checkpoint.pt) included; older ones
    are checkpoint-step<N>.pt. Each is verified against its recorded SHA-256 on load."""
    log_every: int = 1
    """Optimiser steps between metrics records (metrics.jsonl, TensorBoard)."""
    compile: bool = False
    """torch.compile the student and teacher backbones."""
    deterministic: bool = False
    """Ask torch for deterministic algorithms (slower on GPUs)."""
    on_nonfinite: NonFinitePolicy = "stop"
    """stop | skip: what to do with a non-finite loss."""
    pipeline: PipelineMode = "auto"
    """ahead: make each step's batch, views, matches and pair plan one step ahead on a
    background thread (a side CUDA stream), beside the model step | serial: in the step |
    auto: ahead on CUDA, serial elsewhere. The same inputs either way."""

    def rules(self, prefix: str) -> list[str]:
        problems = positive_problems(
            {
                f"{prefix}save_every": self.save_every,
                f"{prefix}log_every": self.log_every,
                f"{prefix}keep_checkpoints": self.keep_checkpoints,
                f"{prefix}dist_timeout": self.dist_timeout,
            }
        )
        if self.max_steps is not None and self.max_steps <= 0:
            problems.append(f"{prefix}max_steps must be > 0, got {self.max_steps}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"{prefix}seed must lie in [0, 2**32), got {self.seed}")
        device = device_problem(f"{prefix}device", self.device)
        return problems + ([device] if device else [])
