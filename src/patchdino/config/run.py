"""The ``run`` section: run-time settings (device, precision, steps, saving, logging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from patchdino.config.checks import choice_problem, positive_problems
from patchdino.config.section import Section

Precision = Literal["auto", "fp32", "bf16"]
"""auto: bf16 autocast on CUDA and fp32 elsewhere (:mod:`patchdino.precision`)."""
NonFinitePolicy = Literal["stop", "skip"]
"""What to do with a non-finite loss."""
PipelineMode = Literal["auto", "ahead", "serial"]
"""Whether each step's inputs are made one step ahead, beside the model step, or in it."""
LoggerName = Literal["tensorboard", "jsonl", "wandb", "mlflow"]
"""Where the logged scalars go (:mod:`patchdino.train.loggers`)."""


def logger_problems(key: str, names: tuple[str, ...]) -> list[str]:
    """Why ``names`` is not a list of distinct logger names that includes ``jsonl``.

    ``metrics.jsonl`` is the run folder's own record: the loss curves (``loss.png``) and
    ``patchdino demo`` read it, so it cannot be left out.
    """
    allowed = get_args(LoggerName)
    problems = [p for name in names if (p := choice_problem(key, name, allowed)) is not None]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        problems.append(f"{key} names {', '.join(twice)} more than once")
    if "jsonl" not in names:
        listed = ", ".join(names)
        problems.append(
            f"{key} must include jsonl (metrics.jsonl is the run's own record, read for "
            f"loss.png and by patchdino demo), got [{listed}]"
        )
    return problems


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
    """Optimiser steps between metrics records (every logger of run.loggers)."""
    loggers: tuple[LoggerName, ...] = ("tensorboard", "jsonl")
    """Where the logged scalars go, on the main process: jsonl (metrics.jsonl, always
    needed: loss.png and patchdino demo read it), tensorboard (tensorboard/), wandb (Weights
    & Biases, pip install 'patchdino[wandb]'), mlflow (pip install 'patchdino[mlflow]').
    W&B's own variables choose where its runs go (WANDB_MODE=offline, WANDB_ENTITY...); MLflow's
    store is MLFLOW_TRACKING_URI, else the run folder's mlruns/. A resumed run logs to the
    same W&B and MLflow run (their ids are kept in trackers.json)."""
    tracker_project: str = "patchdino"
    """The W&B project and the MLflow experiment that wandb and mlflow log to."""
    compile: bool = False
    """torch.compile the student and teacher backbones."""
    deterministic: bool = False
    """Ask torch for deterministic algorithms (slower on GPUs)."""
    on_nonfinite: NonFinitePolicy = "stop"
    """stop | skip: what to do with a non-finite loss."""
    cpu_threads: int | None = None
    """CPU threads of the training step. None (the default): adapt on a CPU device, every
    2 s, to the cores other processes leave free (all of torch's threads alone, one fewer
    per core another busy process holds, at least one); on CUDA, torch's own choice. N:
    exactly N (torch.set_num_threads). OMP_NUM_THREADS caps the adaptive choice."""
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
        if self.cpu_threads is not None and self.cpu_threads < 1:
            problems.append(f"{prefix}cpu_threads must be >= 1 or null, got {self.cpu_threads}")
        if self.max_steps is not None and self.max_steps <= 0:
            problems.append(f"{prefix}max_steps must be > 0, got {self.max_steps}")
        problems += logger_problems(f"{prefix}loggers", self.loggers)
        if not self.tracker_project.strip():
            problems.append(f"{prefix}tracker_project must not be empty")
        if not 0 <= self.seed < 2**32:
            problems.append(f"{prefix}seed must lie in [0, 2**32), got {self.seed}")
        device = device_problem(f"{prefix}device", self.device)
        return problems + ([device] if device else [])
