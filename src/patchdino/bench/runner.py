"""Run benchmark cases one after another: build, warm up, time, measure memory, clean up.

Every case builds its own model from the same seed, so rows differ only in what they measure.
Running out of memory (CUDA, or a failed CPU allocation) marks that row ``OOM`` and the run
goes on with the next case; any other error propagates.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from patchdino.bench.cases import BenchCase, BenchSettings
from patchdino.bench.flops import count_flops, peak_flops
from patchdino.bench.memory import PeakMemory
from patchdino.bench.model_step import TrainingStep
from patchdino.bench.pipeline import InputPipeline, synthetic_canvas
from patchdino.bench.results import OOM, BenchResult, BenchRow
from patchdino.bench.syncs import count_host_syncs
from patchdino.losses import PairPlan
from patchdino.precision import effective_precision
from patchdino.train.ahead import Ahead, makes_ahead
from patchdino.train.build import build_step

Log = Callable[[str], None]


def time_steps(
    run: Callable[[int], object], steps: int, warmup: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Seconds of ``steps`` calls ``run(i)`` after ``warmup`` untimed calls.

    On CUDA the device is synchronised before and after every timed call.

    Returns:
        Wall seconds and process CPU seconds (all threads) of each timed call. On a shared
        CPU the CPU seconds hardly depend on other processes, the wall seconds do.
    """
    for i in range(warmup):
        run(i)
    wall, cpu = [], []
    for i in range(warmup, warmup + steps):
        _synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        run(i)
        _synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is PyTorch running out of device or host memory."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: platform, CPU, torch, device, threads, load."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = list(os.getloadavg())
    return info


def run_case(case: BenchCase, settings: BenchSettings, memory: PeakMemory) -> BenchRow:
    """Build, warm up and time one case; ``OOM`` in its status if memory ran out."""
    config, device = case.config, settings.device
    row = BenchRow(case.name, case.kind, list(case.overrides), config.optim.batch_size)
    with contextlib.ExitStack() as cleanup:
        try:
            run = _prepare(case, settings, memory, row, cleanup)
            row.step_seconds, row.cpu_seconds = time_steps(
                run, settings.steps, settings.warmup, device
            )
            row.peak_memory_bytes = memory.peak_bytes()
            counted = settings.warmup + settings.steps  # the index of each step counted after
            # end2end's producer thread would be counted with it: its parts are the pipeline
            # and model rows
            if case.kind != "end2end" and (device.type == "cuda" or not config.run.compile):
                syncs = count_host_syncs(lambda: run(counted), device)
                row.host_syncs = dict(sorted(syncs.items()))
                counted += 1
            if case.kind != "pipeline" and not config.run.compile:  # one more step, counted
                row.flops_per_step = count_flops(lambda: run(counted))
                precision = effective_precision(config.run.precision, device)
                name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
                row.peak_flops = peak_flops(name, precision)
        except (RuntimeError, MemoryError) as err:
            if not (isinstance(err, MemoryError) or is_out_of_memory(err)):
                raise
            row.status, row.step_seconds, row.cpu_seconds = OOM, [], []
    return row


def _prepare(
    case: BenchCase,
    settings: BenchSettings,
    memory: PeakMemory,
    row: BenchRow,
    cleanup: contextlib.ExitStack,
) -> Callable[[int], object]:
    """Build what ``case`` needs, start ``memory``, and return its step ``run(i)``.

    Model rows also get their head tokens and matched pairs filled in. The ``end2end`` row
    makes each step's inputs as the trainer does (``run.pipeline``: one step ahead, beside
    the model step, on CUDA); what must be stopped after the row goes on ``cleanup``.
    """
    config, device, channels = case.config, settings.device, settings.channels
    images, sizes = synthetic_canvas(
        config.optim.batch_size, channels, settings.canvas, device, config.run.seed
    )
    if case.kind == "pipeline":
        planner = build_step(config, channels)  # planning needs the loss, not the model
        pipeline = InputPipeline(config, channels, planner.plan, device)
        memory.start()  # the model is not counted: it stays on the CPU, unused

        def run_pipeline(i: int) -> object:
            return pipeline(images, sizes, i)

        return run_pipeline
    memory.start()
    trainer = TrainingStep(config, device, channels, reference=case.kind == "reference")
    steps = InputPipeline(config, channels, trainer.plan, device)
    if case.kind == "end2end":
        ahead = makes_ahead(config.run.pipeline, device)
        inputs = cleanup.enter_context(Ahead(lambda i: steps(images, sizes, i), 0, device, ahead))

        def run_end2end(i: int) -> object:
            return trainer(*inputs.next())

        return run_end2end
    batch, plan = steps(images, sizes, 0)
    row.head_tokens_per_image, row.student_tokens_per_image = trainer.head_tokens(batch, plan)
    row.matched_patches = _matched(plan)

    def run_model(i: int) -> object:
        return trainer(batch, plan)

    return run_model


def run_bench(
    cases: Sequence[BenchCase],
    settings: BenchSettings,
    log: Log | None = None,
    extra_settings: Mapping[str, Any] | None = None,
) -> BenchResult:
    """Run ``cases`` in order on ``settings.device``.

    Args:
        cases: the rows, in run order.
        settings: shared settings.
        log: gets one line per finished case.
        extra_settings: recorded with the settings (e.g. the command line).
    """
    device = settings.device
    machine = machine_info(device)
    memory = PeakMemory(device)
    rows = []
    for case in cases:
        row = run_case(case, settings, memory)
        if device.type == "cuda" or row.status == OOM:
            gc.collect()  # frees what a failed case left in reference cycles
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        if log is not None:
            timing = f"{row.median_ms:.1f} ms/step" if row.median_ms is not None else row.status
            log(f"{case.name}: {timing}")
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = list(os.getloadavg())
    first = cases[0].config if cases else None
    settings_dict: dict[str, Any] = {
        "device": str(device),
        "steps": settings.steps,
        "warmup": settings.warmup,
        "canvas": settings.canvas,
        "channels": settings.channels,
    }
    if first is not None:
        settings_dict.update(
            arch=first.model.arch,
            batch_size=first.optim.batch_size,
            global_size=first.views.global_size,
            local_size=first.views.local_size,
            num_local=first.views.num_local,
            patch_size=first.model.patch_size,
            out_dim=first.model.out_dim,
            precision=first.run.precision,
            effective_precision=effective_precision(first.run.precision, device),
            compile=first.run.compile,
        )
    settings_dict.update(extra_settings or {})
    return BenchResult(machine, settings_dict, memory.method, rows)


def _matched(plan: object) -> float:
    """Mean matched patch pairs per (sample, view pair) of a plan or of reference matches."""
    if isinstance(plan, PairPlan):
        return float(plan.matched_patches)
    if isinstance(plan, dict) and plan:
        return float(torch.stack([m.valid.sum(dim=1).double() for m in plan.values()]).mean())
    return 0.0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
