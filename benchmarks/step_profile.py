"""Where one training step's time goes: the trainer's step cut into its phases and timed.

Builds the real :class:`~patchdino.train.trainer.Trainer` for ``--config`` (its data, views,
model, loss and optimiser) and runs its step phase by phase, with the device synchronised
between phases so that each time is its own:

    data (next batch, to the device) -> views -> plan (matching and pair plan) ->
    teacher forward -> student forward -> loss (heads and cross-entropy) -> backward ->
    gradient clipping -> optimiser step -> EMA update -> logging (one metrics line and its
    TensorBoard scalars)

The step is the trainer's own (:func:`~patchdino.train.step.forward_backward` and
:func:`~patchdino.train.step.optimiser_step`, cut into phases by their ``phases`` argument);
only the synchronisation between phases is added. Prints a table of milliseconds per step
(median over ``--steps`` steps after ``--warmup``) and writes it as JSON with ``--json``.
``--operators N`` then profiles ``--steps`` more steps with ``torch.profiler`` and prints the
``N`` operators with the most CPU time of their own (what the phases are made of).

    python benchmarks/step_profile.py --config fashion_mnist_tiny --steps 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from patchdino.config import load_config
from patchdino.train.loggers import tensorboard_writer
from patchdino.train.metrics import MetricsWriter
from patchdino.train.step import forward_backward, optimiser_step
from patchdino.train.trainer import Trainer, step_seed

PHASES = (
    "data",
    "views",
    "plan",
    "teacher forward",
    "student forward",
    "loss",
    "backward",
    "clip",
    "optimiser",
    "ema",
    "logging",
)


class PhaseTimer:
    """``with timer("phase"):`` adds the block's seconds to ``times["phase"]`` while recording.

    The device is synchronised before and after each block, so a phase's time is its own.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.recording = False
        self.times: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        if self.recording:
            self.times[phase].append(time.perf_counter() - start)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def profile_steps(
    trainer: Trainer, steps: int, warmup: int, log_dir: Path
) -> dict[str, list[float]]:
    """Seconds of every phase of ``warmup + steps`` trainer steps (warm-up ones dropped)."""
    config, device = trainer.config, trainer.device
    module, model = trainer.step_module, trainer.step_module.model
    precision = config.run.precision
    batches = trainer._batches(0)
    timer = PhaseTimer(device)
    writer = MetricsWriter(log_dir / "metrics.jsonl", resume_step=0)
    tensorboard = tensorboard_writer(log_dir / "tensorboard", purge_step=1)
    module.train()
    try:
        for step in range(warmup + steps):
            timer.recording = step >= warmup
            values = trainer.schedules.at(step)
            seed = step_seed(config.run.seed, step, 0, 0)
            torch.manual_seed(seed)
            generator = torch.Generator(device=device).manual_seed(seed)
            with timer("data"):
                canvas = next(batches)
                images, sizes = canvas.images.to(device), canvas.sizes.to(device)
            with timer("views"):
                views = trainer.augment(images, sizes, generator=generator)
            with timer("plan"):
                plan = module.plan(views, generator)
            out = forward_backward(
                module, views, plan, values.teacher_temp, precision, phases=timer
            )
            optimiser_step(model, trainer.optimizer, values, config.optim.clip_grad, timer)
            with timer("logging"):
                record = {key: float(value) for key, value in out.scalars().items()}
                record.update(step=step + 1, lr=values.lr)
                writer.write(record)
                for key, value in record.items():
                    if key != "step":
                        tensorboard.add_scalar(key, value, step + 1)
    finally:
        writer.close()
        tensorboard.close()
    return timer.times


def operator_table(trainer: Trainer, steps: int, log_dir: Path, rows: int) -> str:
    """The ``rows`` operators with the most own CPU time over ``steps`` profiled steps, with
    each one's share of the total (profiler overhead included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profile_steps(trainer, steps, 0, log_dir)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"{'operator':<58}{'calls/step':>11}{'ms/step':>9}{'share':>8}"]
    for event in events[:rows]:
        lines.append(
            f"{event.key[:57]:<58}{event.count / steps:>11.1f}"
            f"{event.self_cpu_time_total / 1e3 / steps:>9.2f}"
            f"{100 * event.self_cpu_time_total / total:>7.1f}%"
        )
    calls = sum(e.count for e in events) / steps
    lines.append(
        f"all {len(events)} operators: {calls:.0f} calls/step, {total / 1e3 / steps:.1f} ms/step"
    )
    return "\n".join(lines) + "\n"


def report(times: dict[str, list[float]], batch_size: int) -> dict[str, Any]:
    """Median milliseconds per phase, their share and the implied images per second."""
    rows = {p: statistics.median(times[p]) * 1e3 for p in PHASES if times.get(p)}
    total = sum(rows.values())
    return {
        "ms_per_step": rows,
        "total_ms": total,
        "share": {p: v / total for p, v in rows.items()},
        "images_per_s": batch_size / (total / 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_mnist_tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--operators", type=int, default=0, help="also list the N costliest operators (0: no)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Path(folder) / "run", progress=False)
        times = profile_steps(trainer, args.steps, args.warmup, Path(folder))
        operators = (
            operator_table(trainer, args.steps, Path(folder), args.operators)
            if args.operators
            else ""
        )
    result = report(times, config.optim.batch_size)
    result.update(
        machine=f"{platform.machine()}, {torch.get_num_threads()} threads, device "
        f"{trainer.device}; torch {torch.__version__}",
        command=" ".join(["python", "benchmarks/step_profile.py", *sys.argv[1:]]),
        steps=args.steps,
        warmup=args.warmup,
    )
    print(result["machine"])
    print(f"{'phase':<18}{'ms/step':>10}{'share':>8}")
    for phase, ms in result["ms_per_step"].items():
        print(f"{phase:<18}{ms:>10.2f}{100 * result['share'][phase]:>7.1f}%")
    print(f"{'total':<18}{result['total_ms']:>10.2f}   -> {result['images_per_s']:.0f} img/s")
    print(operators, end="")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
