"""GPU evidence in one command: CUDA correctness, training throughput and the quality question.

One short GPU window must produce every number the project publishes about GPUs, so this
script runs its stages one after another, each with its own time budget, in subprocesses
(a stage that crashes or runs out of time cannot take the others down), and rewrites
``evidence.json`` and ``evidence.md`` under ``--output`` after every stage, so that a run killed
from outside still leaves what it finished.

1. ``correctness``: ``pytest -m "cuda or triton"`` (the Triton loss kernels compiled, every
   ``loss.kernel`` against the float64 loss in fp32 and bf16, GPU views, crops and matches
   equal the CPU ones, a bf16 training run that is stopped and resumed, a one-rank NCCL
   process group).
2. ``throughput``: ``patchdino bench`` at the paper's setting (ViT-S/16, 2 x 224 + 8 x 96 views,
   batch 128, bf16) at ``out_dim`` 65,536 and 10,000, with the cheaper settings, the input
   pipeline and the end-to-end step; then with ``--compile``; then a ``torch.profiler`` table
   of the ``patch`` step's top kernels. The goals of :data:`GOALS` are checked on the result.
3. ``quality``: Fashion-MNIST pretraining of ``dino``, ``grid`` and ``nearest`` with 3 seeds,
   one process per run, all at once (the tiny ViT leaves the GPU mostly idle); k-NN curves,
   final k-NN and linear probe (``benchmarks/quality.py``).
4. ``restarts``: on two or more GPUs, ``benchmarks/restart_trials.py`` with NCCL (one process
   per GPU, one killed, ``torchrun --max-restarts`` restarts the group); skipped with a note
   on one GPU.

Usage (from the repository root, without installing: ``PYTHONPATH=src``)::

    make gpu-data                                   # Fashion-MNIST into .data/ (git-ignored)
    PYTHONPATH=src python benchmarks/gpu_evidence.py --output runs/gpu
    python benchmarks/gpu_evidence.py --render runs/gpu/evidence.json    # updates docs/
    PYTHONPATH=src python benchmarks/gpu_evidence.py --dry-run --output runs/gpu_dry  # CPU

``--dry-run`` runs every stage on the CPU with tiny sizes (and generated Fashion-MNIST-like
data when ``--data`` is not given), to check the kit itself: it checks what the kit does, not
how fast this machine is, so its stages have no time budget unless ``--budget`` sets one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".data" / "fashion-mnist"
DOCS = ROOT / "docs"
BEGIN = "<!-- gpu-evidence:begin -->"
END = "<!-- gpu-evidence:end -->"

PAPER = ["--arch", "vit_small_patch16_224", "--batch-size", "128", "--precision", "bf16"]
"""The paper's setting for ``patchdino bench`` (its default views are 2 x 224 + 8 x 96)."""

CHEAPER = [
    "pairs16:loss.terms.patch.pairs_per_view=16",
    "pairs8:loss.terms.patch.pairs_per_view=8",
    "narrow:model.patch_head=separate,model.patch_out_dim=8192",
]
"""The cheaper settings of the patch loss, as ``--variant`` rows."""

KERNEL_ROWS = [
    "kernel_triton:loss.kernel=triton",
    "kernel_chunked:loss.kernel=chunked",
]
"""The ``patch`` row with each other ``loss.kernel`` (the ``patch`` row itself uses ``auto``,
:func:`patchdino.losses.kernel.resolve_kernel`), as ``--variant`` rows."""

STEP_ROWS = ["fused_adamw:optim.adamw=fused"]
"""The ``patch`` row with another way of running the step's own work, as ``--variant`` rows
(out_dim 65,536 only)."""

QUALITY_VARIANTS = ("dino", "grid", "nearest")
QUALITY_SEEDS = (0, 1, 2)
QUALITY_RECIPE = ["optim.batch_size=512", "optim.lr=0.0015", "optim.warmup_epochs=1"]
"""Overrides of ``fashion_mnist_tiny`` for the GPU: batch 512 (more work per step for a GPU that
the tiny ViT leaves mostly idle), peak learning rate 0.003 after the linear scaling rule (3
times the CPU recipe's for 8 times its batch) and one warm-up epoch."""

DRY_MODEL = [
    "model.arch=vit_pico",
    "model.patch_size=4",
    "model.out_dim=64",
    "model.patch_out_dim=64",
    "model.hidden_dim=32",
    "model.bottleneck_dim=16",
]
"""A model small enough for a CPU dry run of every stage."""


@dataclass(frozen=True)
class Goal:
    """A throughput goal: ``measured(throughput) <= limit`` (or ``>=`` when ``at_least``)."""

    name: str
    text: str
    limit: float
    at_least: bool
    measure: Callable[[dict[str, dict[str, Any]]], float | None]
    hardware: str = ""


def _ratio(a: str, b: str, table: str, key: str = "ms_per_step_median") -> Callable[..., Any]:
    def measure(tables: dict[str, dict[str, Any]]) -> float | None:
        rows = tables.get(table, {})
        x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
        return x / y if x and y else None

    return measure


def _cheapest(table: str) -> Callable[..., Any]:
    def measure(tables: dict[str, dict[str, Any]]) -> float | None:
        ratios = [_ratio(name.split(":")[0], "cls", table)(tables) for name in CHEAPER]
        known = [r for r in ratios if r is not None]
        return min(known) if known else None

    return measure


def _value(row: str, table: str, key: str, scale: float = 1.0) -> Callable[..., Any]:
    def measure(tables: dict[str, dict[str, Any]]) -> float | None:
        value = tables.get(table, {}).get(row, {}).get(key)
        return value * scale if value is not None else None

    return measure


def _pipeline_over_model(table: str) -> Callable[..., Any]:
    def measure(tables: dict[str, dict[str, Any]]) -> float | None:
        return _ratio("pipeline", "patch", table, "images_per_s")(tables)

    return measure


GOALS = (
    Goal(
        "patch_over_cls_k65536",
        "`patch` step time / `cls` step time at out_dim 65,536",
        1.35,
        False,
        _ratio("patch", "cls", "k65536"),
    ),
    Goal(
        "patch_over_cls_k10000",
        "`patch` step time / `cls` step time at out_dim 10,000",
        1.15,
        False,
        _ratio("patch", "cls", "k10000"),
    ),
    Goal(
        "patch_memory_k65536_gib",
        "`patch` peak memory (GiB) at batch 128, out_dim 65,536",
        21.5,
        False,
        _value("patch", "k65536", "peak_memory_bytes", 1 / 2**30),
    ),
    Goal(
        "cls_images_per_s",
        "`cls` img/s (out_dim 65,536)",
        1300.0,
        True,
        _value("cls", "k65536", "images_per_s"),
        hardware="H200",
    ),
    Goal(
        "end2end_images_per_s",
        "`end2end` img/s (out_dim 65,536)",
        900.0,
        True,
        _value("end2end", "k65536", "images_per_s"),
        hardware="H200",
    ),
    Goal(
        "end2end_over_patch",
        "`end2end` step time / `patch` model-step time (out_dim 65,536)",
        1.10,
        False,
        _ratio("end2end", "patch", "k65536"),
    ),
    Goal(
        "cheaper_over_cls_k65536",
        "best cheaper setting's step time / `cls` at out_dim 65,536",
        1.15,
        False,
        _cheapest("k65536"),
    ),
    Goal(
        "pipeline_over_patch",
        "`pipeline` img/s / `patch` model-step img/s (out_dim 65,536)",
        3.0,
        True,
        _pipeline_over_model("k65536"),
    ),
)
"""What the throughput stage must show (img/s goals set for an H200; other cards are reported
as is)."""


def check_goals(tables: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal with its measured value, whether it is met and by how much it is missed.

    Args:
        tables: bench table name (``k65536``, ``k10000``, ``compile``) -> row name -> row dict.
    """
    results = []
    for goal in GOALS:
        value = goal.measure(tables)
        met = (
            None
            if value is None
            else (value >= goal.limit if goal.at_least else value <= goal.limit)
        )
        missed = None
        if value is not None and not met:
            missed = goal.limit / value - 1 if goal.at_least else value / goal.limit - 1
        results.append(
            {
                "goal": goal.name,
                "what": goal.text,
                "limit": goal.limit,
                "at_least": goal.at_least,
                "measured": value,
                "met": met,
                "missed_by_fraction": missed,
                "hardware": goal.hardware,
            }
        )
    return results


# ------------------------------------------------------------------------------- running
def _wait_seconds(seconds: float) -> float | None:
    """A wait of ``seconds`` (at least 1), or None (no limit) for an infinite budget."""
    return None if math.isinf(seconds) else max(1.0, seconds)


def run_command(
    command: Sequence[str], timeout: float, log: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``command`` in its own process group, killing the whole group after ``timeout``.

    Returns:
        ``returncode`` (None when killed), ``seconds``, ``timed_out``, the command line and the
        last 3,000 characters of its combined output (all of it is in ``log``).
    """
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            list(command),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=_wait_seconds(timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
    text = log.read_text(errors="replace")
    return {
        "command": " ".join(command),
        "returncode": None if timed_out else process.returncode,
        "timed_out": timed_out,
        "seconds": round(time.perf_counter() - started, 2),
        "output_tail": text[-3000:],
    }


def _kill_group(process: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group may be gone
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def child_env(threads: int | None = None, cpu: bool = False) -> dict[str, str]:
    """The environment of every subprocess: this source tree first on the import path; on a
    CPU (``cpu``: a dry run) Triton kernels run in Triton's interpreter."""
    env = dict(os.environ)
    if cpu:
        env["TRITON_INTERPRET"] = "1"
    paths = [str(ROOT / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# ----------------------------------------------------------------------------- the stages
@dataclass
class Context:
    """What every stage needs: where to write, how big, how long."""

    output: Path
    work: Path
    dry_run: bool
    device: str
    data: Path
    quality_steps: int
    budgets: dict[str, float]
    tables: tuple[str, ...] = ("k65536", "k10000", "compile")

    def budget(self, stage: str) -> float:
        return self.budgets[stage]


def environment() -> dict[str, Any]:
    """Card, driver, CUDA, torch and Python versions of this machine."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    with contextlib.suppress(ImportError):
        import torchvision

        info["torchvision"] = torchvision.__version__
    with contextlib.suppress(ImportError):
        import timm

        info["timm"] = timm.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            card=props.name,
            card_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            device_count=torch.cuda.device_count(),
        )
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "--query-gpu=name,driver_version,memory.total"
        done = subprocess.run([smi, query, "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    return info


def stage_correctness(ctx: Context) -> dict[str, Any]:
    """``pytest -m "cuda or triton"``: counts, failures and the run's tail."""
    report = ctx.work / "cuda_tests.xml"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda or triton",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    command += [f"--junitxml={report}", "tests"]
    run = run_command(command, ctx.budget("correctness"), ctx.work / "correctness.log", child_env())
    result: dict[str, Any] = {"run": run}
    if report.exists():
        result.update(junit_summary(report))
    ok = run["returncode"] == 0 and result.get("failed", 1) == 0
    if ctx.dry_run:  # no GPU: every CUDA test is collected and skipped
        ok = run["returncode"] == 0 and result.get("tests", 0) > 0
    result["status"] = "ok" if ok else "failed"
    return result


def junit_summary(path: Path) -> dict[str, Any]:
    """Passed, failed, skipped and the failing tests' names and messages of a JUnit XML file."""
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, skipped = [], 0
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed.append({"test": name, "message": (problem.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            skipped += 1
    passed = len(cases) - len(failed) - skipped
    return {
        "tests": len(cases),
        "passed": passed,
        "failed": len(failed),
        "skipped": skipped,
        "failures": failed,
    }


def bench_commands(ctx: Context) -> dict[str, list[str]]:
    """The ``patchdino bench`` command of each throughput table."""
    base = [sys.executable, "-m", "patchdino", "bench", "--device", ctx.device]
    if ctx.dry_run:
        size = ["--batch-size", "4", "--global-size", "16", "--local-size", "8"]
        size += ["--num-local", "2", "--canvas", "32", "--steps", "1", "--warmup", "1"]
        size += ["--precision", "fp32", "--threads", "1"]
        models = {"k65536": [*DRY_MODEL], "k10000": [*DRY_MODEL, "model.out_dim=48"]}
    else:
        size = [*PAPER, "--steps", "10", "--warmup", "3"]
        models = {"k65536": ["model.out_dim=65536"], "k10000": ["model.out_dim=10000"]}
    variants = [arg for v in [*KERNEL_ROWS, *CHEAPER] for arg in ("--variant", v)]
    step_rows = [arg for v in STEP_ROWS for arg in ("--variant", v)]
    every = "cls,patch,reference,pipeline,end2end"
    compiled = "patch" if ctx.dry_run else "patch,end2end"  # compiling on a CPU takes long
    return {
        "k65536": [*base, *size, "--modes", every, *variants, *step_rows, *models["k65536"]],
        "k10000": [*base, *size, "--modes", "cls,patch,reference", *variants, *models["k10000"]],
        "compile": [*base, *size, "--compile", "--modes", compiled, *models["k65536"]],
    }


def stage_throughput(ctx: Context) -> dict[str, Any]:
    """Bench tables (each its own process), goals, then the profile of the ``patch`` step."""
    deadline = time.perf_counter() + ctx.budget("throughput")
    shares = {"k65536": 0.4, "k10000": 0.25, "compile": 0.35}  # of 85%; the profile gets the rest
    tables: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    commands = {n: c for n, c in bench_commands(ctx).items() if n in ctx.tables}
    for name, command in commands.items():
        path = ctx.work / f"bench_{name}.json"
        left = deadline - time.perf_counter()
        share = shares[name] / sum(shares[n] for n in commands)
        timeout = min(left, 0.85 * share * ctx.budget("throughput") + 0.1 * left)
        runs[name] = run_command(
            [*command, "--json", str(path)],
            timeout,
            ctx.work / f"bench_{name}.log",
            child_env(cpu=ctx.device == "cpu"),
        )
        if path.exists():
            data = json.loads(path.read_text())
            tables[name] = {row["name"]: _short_row(row) for row in data["rows"]}
            runs[name]["machine"] = data.get("machine")
            runs[name]["triton_tiles"] = data.get("triton_tiles", [])
            runs[name]["settings"] = {
                k: v for k, v in data.get("settings", {}).items() if k != "arguments"
            }
        else:
            tables[name] = rows_from_log(runs[name]["output_tail"])
    profile = None
    if "k65536" in ctx.tables:  # the profile belongs to the main table's `patch` row
        profile_path = ctx.work / "profile.json"
        profile_command = [sys.executable, str(Path(__file__)), "--profile", str(profile_path)]
        profile_command += ["--device", ctx.device] + (["--dry-run"] if ctx.dry_run else [])
        left = max(1.0, deadline - time.perf_counter())
        runs["profile"] = run_command(profile_command, left, ctx.work / "profile.log", child_env())
        profile = json.loads(profile_path.read_text()) if profile_path.exists() else None
    complete = all(runs[n]["returncode"] == 0 for n in runs) and all(
        row.get("status") in ("ok", "OOM") for t in tables.values() for row in t.values()
    )
    return {
        "status": "ok" if complete else "incomplete",
        "tables": tables,
        "goals": check_goals(tables),
        "profile": profile,
        "runs": runs,
    }


def _short_row(row: dict[str, Any]) -> dict[str, Any]:
    keys = ["status", "ms_per_step_median", "ms_per_step_min", "images_per_s"]
    keys += ["peak_memory_bytes", "head_tokens_per_image", "matched_patches", "overrides"]
    keys += ["tflops_per_s", "mfu", "host_syncs"]
    return {k: row.get(k) for k in keys}


def rows_from_log(text: str) -> dict[str, Any]:
    """Rows a bench run finished before it was stopped (its ``NAME: X ms/step`` log lines)."""
    rows: dict[str, Any] = {}
    for name, value in re.findall(r"^(\w+): ([\d.]+) ms/step$", text, flags=re.MULTILINE):
        rows[name] = {"status": "ok", "ms_per_step_median": float(value), "from_log": True}
    for name in re.findall(r"^(\w+): OOM$", text, flags=re.MULTILINE):
        rows[name] = {"status": "OOM", "from_log": True}
    return rows


def profile_patch_step(device_name: str, dry_run: bool, top: int = 15) -> dict[str, Any]:
    """``torch.profiler`` over 3 ``patch`` steps after 3 warm-up steps: the top operators.

    Sorted by device (CUDA) time on a GPU, by CPU time on the CPU.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from patchdino.bench.cases import make_cases
    from patchdino.bench.model_step import TrainingStep
    from patchdino.bench.pipeline import InputPipeline, synthetic_canvas

    device = torch.device(device_name)
    if dry_run:
        overrides = [*DRY_MODEL, "optim.batch_size=4", "views.global_size=16"]
        overrides += ["views.local_size=8", "views.num_local=2", "run.precision=fp32"]
        canvas = 32
    else:
        overrides = ["model.arch=vit_small_patch16_224", "optim.batch_size=128"]
        overrides += ["model.out_dim=65536", "run.precision=bf16"]
        canvas = 320
    (case,) = make_cases(["patch"], [*overrides, f"run.device={device_name}"])
    step = TrainingStep(case.config, device)
    pipeline = InputPipeline(case.config, 3, step.plan, device)
    images, sizes = synthetic_canvas(case.config.optim.batch_size, 3, canvas, device, 0)
    batch, plan = pipeline(images, sizes, 0)
    for _ in range(3):
        step(batch, plan)
    activities = [ProfilerActivity.CPU]
    cuda = device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(3):
            step(batch, plan)
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    key = "cpu_time_total"
    if cuda:  # called cuda_time_total before torch 2.4
        key = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
    ranked = sorted(events, key=lambda e: float(getattr(e, key, 0.0) or 0.0), reverse=True)
    total = sum(float(getattr(e, "self_" + key, 0.0) or 0.0) for e in events)
    rows = [
        {
            "name": e.key[:90],
            "calls": e.count,
            "ms_per_step": float(getattr(e, key, 0.0) or 0.0) / 1e3 / 3,
            "self_ms_per_step": float(getattr(e, "self_" + key, 0.0) or 0.0) / 1e3 / 3,
        }
        for e in ranked[:top]
    ]
    return {"sorted_by": key, "self_ms_per_step_total": total / 1e3 / 3, "top": rows}


def quality_commands(ctx: Context) -> dict[str, list[str]]:
    """One ``benchmarks/quality.py`` command per (variant, seed)."""
    steps = ctx.quality_steps
    every = max(1, steps // 5)
    common = ["--config", "fashion_mnist_tiny", "--data", str(ctx.data), "--device", ctx.device]
    common += ["--steps", str(steps), "--eval-every", str(every)]
    if ctx.dry_run:
        common += ["--curve-train", "64", "--curve-test", "32", "--probe-epochs", "1"]
        recipe = [*DRY_MODEL, "optim.batch_size=8", "views.global_size=16", "views.local_size=8"]
        recipe += ["views.num_local=2"]
    else:
        common += ["--probe-epochs", "30"]
        recipe = QUALITY_RECIPE
    commands = {}
    for seed in QUALITY_SEEDS[:1] if ctx.dry_run else QUALITY_SEEDS:
        for variant in QUALITY_VARIANTS:
            name = f"{variant}_seed{seed}"
            command = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), *common]
            command += ["--variants", variant, "--seeds", str(seed)]
            command += ["--output", str(ctx.work / "quality" / name)]
            if name != "dino_seed0":
                command.append("--skip-baselines")
            commands[name] = [*command, *recipe]
    return commands


def stage_quality(ctx: Context) -> dict[str, Any]:
    """Every (variant, seed) run at once; merged summary, or the curves reached in time."""
    commands = quality_commands(ctx)
    threads = max(1, (os.cpu_count() or 1) // len(commands)) if not ctx.dry_run else 1
    deadline = time.perf_counter() + ctx.budget("quality")
    processes, logs = {}, {}
    for name, command in commands.items():
        logs[name] = (ctx.work / f"quality_{name}.log").open("w")
        processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(threads),
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    timed_out = []
    for name, process in processes.items():
        try:
            process.wait(timeout=_wait_seconds(deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            timed_out.append(name)
            _kill_group(process)
        logs[name].close()
    folders = [ctx.work / "quality" / n for n in commands]
    finished = [f for f in folders if (f / "summary.json").exists()]
    result: dict[str, Any] = {
        "recipe": "fashion_mnist_tiny "
        + " ".join(QUALITY_RECIPE if not ctx.dry_run else DRY_MODEL),
        "steps": ctx.quality_steps,
        "commands": {n: " ".join(c) for n, c in commands.items()},
        "returncodes": {n: p.returncode for n, p in processes.items()},
        "timed_out": timed_out,
        "tails": {
            n: (ctx.work / f"quality_{n}.log").read_text(errors="replace")[-1500:]
            for n, p in processes.items()
            if p.returncode != 0
        },
    }
    if finished:
        merged = ctx.work / "quality" / "merged"
        command = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--merge"]
        command += [*map(str, finished), "--output", str(merged)]
        result["merge"] = run_command(command, 120, ctx.work / "quality_merge.log", child_env())
        if (merged / "summary.json").exists():
            summary = json.loads((merged / "summary.json").read_text())
            result.update(
                table=summary["table"],
                baselines=summary["baselines"],
                runs=summary["runs"],
                batch_size=summary["batch_size"],
                machine=summary["machine"],
            )
            if (merged / "knn_curves.png").exists():
                shutil.copy(merged / "knn_curves.png", ctx.output / "knn_curves.png")
    result["partial_curves"] = {
        p.name.removeprefix("partial_").removesuffix(".json"): json.loads(p.read_text())["curve"]
        for p in sorted((ctx.work / "quality").glob("*/partial_*.json"))
    }
    result["status"] = "ok" if len(finished) == len(commands) else "incomplete"
    return result


def gpu_count() -> int:
    """CUDA devices visible to a child process (0 when torch or CUDA is missing)."""
    probe = [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"]
    done = subprocess.run(probe, capture_output=True, text=True, env=child_env(), timeout=120)
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def stage_restarts(ctx: Context) -> dict[str, Any]:
    """``benchmarks/restart_trials.py`` with NCCL: one process per GPU, one killed, torchrun
    restarts the group; needs at least two GPUs (skipped, with a note, on one)."""
    gpus = 0 if ctx.dry_run else gpu_count()
    if gpus < 2:
        why = "a CPU dry run" if ctx.dry_run else f"{gpus} GPU(s) on this machine"
        return {"status": "skipped", "note": f"needs two GPUs, one per process; {why}"}
    path = ctx.work / "restarts.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "restart_trials.py")]
    command += ["--device", "cuda", "--nproc", str(gpus), "--trials", "2", "--steps", "20"]
    command += ["--limit", "120", "--work", str(ctx.work / "restarts"), "--json", str(path)]
    run = run_command(command, ctx.budget("restarts"), ctx.work / "restarts.log", child_env())
    result: dict[str, Any] = {"run": run, "gpus": gpus}
    if path.exists():
        summary = json.loads(path.read_text())
        result.update({k: summary[k] for k in ("trials", "recovered", "exact", "orphans")})
    result["status"] = "ok" if result.get("recovered") == result.get("trials", -1) else "failed"
    return result


STAGES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "correctness": stage_correctness,
    "throughput": stage_throughput,
    "quality": stage_quality,
    "restarts": stage_restarts,
}
BUDGETS = {"correctness": 90.0, "throughput": 210.0, "quality": 160.0, "restarts": 90.0}
"""Seconds per stage on one H200 or H100: 7.7 minutes in all, with the environment probe
(``restarts`` only runs on two or more GPUs)."""
DRY_BUDGETS = {s: math.inf for s in BUDGETS}
"""The dry run checks what the kit does on the CPU, not how fast this machine is: no budget."""


# ---------------------------------------------------------------------------- the report
def write_report(evidence: dict[str, Any], output: Path) -> None:
    """``evidence.json`` and its Markdown rendering ``evidence.md`` (atomically each)."""
    output.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("evidence.json", json.dumps(evidence, indent=1, default=str)),
        ("evidence.md", render_markdown(evidence)),
    ):
        tmp = output / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(output / name)


def render_markdown(evidence: dict[str, Any]) -> str:
    """The whole evidence as Markdown: environment, commands, every stage's tables."""
    env = evidence.get("environment", {})
    lines = ["# GPU evidence", "", machine_line(evidence), ""]
    lines += [f"Command: `{evidence.get('command', '')}`", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += [
        "",
        "Stages: "
        + ", ".join(
            f"{s['stage']} {s['status']} ({s['seconds']:.0f} s)" for s in evidence.get("stages", [])
        ),
        "",
    ]
    lines += correctness_markdown(evidence.get("correctness"))
    lines += throughput_markdown(evidence.get("throughput"))
    lines += quality_markdown(evidence.get("quality"))
    lines += restarts_markdown(evidence.get("restarts"))
    return "\n".join(lines) + "\n"


def restarts_markdown(result: dict[str, Any] | None) -> list[str]:
    """The NCCL kill-and-restart trials, or why they did not run."""
    lines = ["## Restarts (NCCL, `benchmarks/restart_trials.py`)", ""]
    if not result:
        return [*lines, "not run", ""]
    if result.get("status") == "skipped":
        return [*lines, f"skipped: {result.get('note')}", ""]
    lines.append(
        f"{result.get('recovered', 0)} of {result.get('trials', 0)} trials recovered "
        f"({result.get('exact', 0)} bit-exact), {result.get('orphans', 0)} left processes, "
        f"{result.get('gpus')} GPUs; status {result.get('status')}."
    )
    return [*lines, ""]


def machine_line(evidence: dict[str, Any]) -> str:
    env = evidence.get("environment", {})
    card = env.get("card") or "no GPU (CPU dry run)"
    return (
        f"Machine: {card}, driver/nvidia-smi `{env.get('nvidia_smi', 'n/a')}`, CUDA "
        f"{env.get('cuda_runtime')}, torch {env.get('torch')}, Python {env.get('python')}, "
        f"{env.get('cpu_count')} CPU cores; run {evidence.get('started', '')}"
        + (" (dry run)" if evidence.get("dry_run") else "")
        + "."
    )


def correctness_markdown(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["## Correctness", "", "not run", ""]
    lines = ['## Correctness (`pytest -m "cuda or triton"`)', ""]
    lines.append(
        f"{result.get('passed', 0)} passed, {result.get('failed', 0)} failed, "
        f"{result.get('skipped', 0)} skipped of {result.get('tests', 0)} "
        f"({result['run']['seconds']:.0f} s); status {result['status']}."
    )
    lines += [f"- FAILED `{f['test']}`: {f['message']}" for f in result.get("failures", [])]
    return [*lines, ""]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def bench_table(rows: dict[str, Any]) -> list[str]:
    cls = rows.get("cls", {}).get("ms_per_step_median")
    lines = [
        "| row | img/s | ms/step (median) | peak memory (GiB) | head tokens / img | vs `cls` "
        "| MFU | host syncs / step |"
    ]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        if row.get("status") != "ok":
            lines.append(f"| `{name}` | {row.get('status')} | - | - | - | - | - | - |")
            continue
        mfu = row.get("mfu")
        ms = row.get("ms_per_step_median")
        memory = row.get("peak_memory_bytes")
        ratio = ms / cls if ms and cls and row.get("head_tokens_per_image") is not None else None
        lines.append(
            f"| `{name}` | {_fmt(row.get('images_per_s'), 0)} | {_fmt(ms)} | "
            f"{_fmt(memory / 2**30 if memory else None, 2)} | "
            f"{_fmt(row.get('head_tokens_per_image'))} | {_fmt(ratio, 2)} | "
            f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} | {_fmt(row.get('host_syncs'))} |"
        )
    return lines


def throughput_markdown(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["## Throughput", "", "not run", ""]
    lines = ["## Throughput (`patchdino bench`)", ""]
    titles = {
        "k65536": "out_dim 65,536 (the paper's head)",
        "k10000": "out_dim 10,000",
        "compile": "`--compile`, out_dim 65,536",
    }
    for name, rows in result.get("tables", {}).items():
        run = result["runs"].get(name, {})
        lines += [f"### {titles.get(name, name)}", "", f"`{_strip_python(run.get('command', ''))}`"]
        if run.get("timed_out"):
            lines.append("(stopped at its time budget: the rows below are those it finished)")
        lines += ["", *bench_table(rows), ""]
        tiles = run.get("triton_tiles") or []
        if tiles:
            lines += ["Tiles the first-use tuner chose (`loss.kernel=triton`):", ""]
            lines += [
                f"- {t['kernel']} kernel, {t['dtype']}, d = {t['dim']}, K <= {t['keys']}, "
                f"bias {t['bias']}: {t['tile']}"
                for t in tiles
            ]
            lines.append("")
    lines += ["### Goals", "", "| goal | limit | measured | met | missed by |"]
    lines.append("| --- | ---: | ---: | :---: | ---: |")
    for goal in result.get("goals", []):
        sign = ">=" if goal["at_least"] else "<="
        hardware = f" (set for {goal['hardware']})" if goal["hardware"] else ""
        met = {True: "yes", False: "no", None: "not measured"}[goal["met"]]
        missed = goal["missed_by_fraction"]
        lines.append(
            f"| {goal['what']}{hardware} | {sign} {_fmt(goal['limit'], 2)} | "
            f"{_fmt(goal['measured'], 2)} | {met} | "
            f"{'-' if missed is None else f'{100 * missed:.0f}%'} |"
        )
    profile = result.get("profile")
    if profile:
        lines += ["", f"### Where the `patch` step's time goes ({profile['sorted_by']})", ""]
        lines += ["| operator | calls (3 steps) | total ms / step | self ms / step |"]
        lines.append("| --- | ---: | ---: | ---: |")
        for row in profile["top"]:
            name = row["name"].replace("|", "/")
            lines.append(
                f"| `{name}` | {row['calls']} | {row['ms_per_step']:.2f} | "
                f"{row['self_ms_per_step']:.2f} |"
            )
    return [*lines, ""]


def _strip_python(command: str) -> str:
    """A bench command as a user types it: ``patchdino bench ...`` without the JSON path."""
    command = re.sub(r"^\S*python\S* -m patchdino", "patchdino", command)
    return re.sub(r" --json \S+", "", command)


def demote(lines: list[str], levels: int = 2) -> list[str]:
    """Markdown headings ``levels`` deeper, for embedding a report under a document heading."""
    return ["#" * levels + line if line.startswith("#") else line for line in lines]


def quality_markdown(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["## Quality", "", "not run", ""]
    lines = ["## Quality (Fashion-MNIST)", ""]
    lines.append(
        f"Recipe: `{result['recipe']}`, {result['steps']} steps of batch "
        f"{result.get('batch_size', '?')} per run; status {result['status']}."
    )
    lines += ["", *quality_table(result), ""]
    return lines


def quality_table(result: dict[str, Any]) -> list[str]:
    """k-NN (CLS, and mean patch token when measured) and linear top-1, mean ± std over seeds,
    with the baselines."""
    table = result.get("table", {})
    pooled = bool(table) and all("knn20_mean_mean" in row for row in table.values())
    extra = " k-NN, mean patch token (%) |" if pooled else ""
    lines = [
        f"| features | k-NN top-1 (%) |{extra} linear top-1 (%) | seeds | training min / run |"
    ]
    lines.append("| --- | ---: |" + (" ---: |" if pooled else "") + " ---: | ---: | ---: |")
    baselines = result.get("baselines", {})
    if "pixels" in baselines:
        pixels = baselines["pixels"]["knn20"]
        lines.append(f"| raw pixels | {pixels:.2f} |" + (" - |" if pooled else "") + " - | - | - |")
    if "random" in baselines:
        r = baselines["random"]
        mean = f" {r.get('knn20_mean', math.nan):.2f} |" if pooled else ""
        lines.append(
            f"| random weights | {r['knn20']:.2f} |{mean} {r['linear_top1']:.2f} | - | - |"
        )
    for name, row in table.items():
        mean = f" {row['knn20_mean_mean']:.2f} ± {row['knn20_mean_std']:.2f} |" if pooled else ""
        lines.append(
            f"| `{name}` | {row['knn20_mean']:.2f} ± {row['knn20_std']:.2f} |{mean} "
            f"{row['linear_top1_mean']:.2f} ± {row['linear_top1_std']:.2f} | "
            f"{row['seeds']:.0f} | {row['train_seconds_mean'] / 60:.1f} |"
        )
    if not table and result.get("partial_curves"):
        lines += ["", "Runs not finished in time; k-NN curve points reached (step, top-1):", ""]
        lines += [f"- {n}: {c}" for n, c in result["partial_curves"].items()]
    return lines


# ----------------------------------------------------------------------------- rendering
def merge_evidence(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One evidence from several runs (oldest first): each stage from the last run that has it.

    Throughput tables merge by name (a later run's table replaces an earlier one of the same
    name) and the goals are checked again on the merged tables.
    """
    merged: dict[str, Any] = dict(parts[-1])
    merged["runs"] = [
        {k: p.get(k) for k in ("command", "started", "environment", "stages")} for p in parts
    ]
    for stage in STAGES:
        found = [p[stage] for p in parts if p.get(stage)]
        if found:
            merged[stage] = found[-1]
    benches = [p["throughput"] for p in parts if p.get("throughput")]
    if len(benches) > 1:
        tables: dict[str, Any] = {}
        runs: dict[str, Any] = {}
        for bench in benches:
            tables.update(bench.get("tables", {}))
            runs.update(bench.get("runs", {}))
        profiles = [b["profile"] for b in benches if b.get("profile")]
        merged["throughput"] = dict(
            benches[-1],
            tables=tables,
            runs=runs,
            goals=check_goals(tables),
            profile=profiles[-1] if profiles else None,
        )
    return merged


def render_docs(paths: Sequence[Path], docs: Path = DOCS) -> list[Path]:
    """Replace the GPU blocks of performance.md and results.md with the evidence of ``paths``.

    The blocks sit between ``<!-- gpu-evidence:begin -->`` and ``<!-- gpu-evidence:end -->``;
    several evidence files (oldest first) are merged by :func:`merge_evidence`. The k-NN curve
    figure next to the evidence file that holds the quality stage is copied into
    ``docs/results/``.

    Raises:
        ValueError: a document has no such block, or some evidence comes from a dry run.
    """
    parts = [json.loads(p.read_text()) for p in paths]
    for path, part in zip(paths, parts):
        if part.get("dry_run"):
            raise ValueError(f"{path} comes from a dry run; render only real GPU evidence")
    evidence = merge_evidence(parts)
    with_quality = [p for p, part in zip(paths, parts) if part.get("quality")]
    figure = (with_quality[-1] if with_quality else paths[-1]).parent / "knn_curves.png"
    link = None
    if figure.exists():
        try:  # evidence kept under docs/ is linked where it is
            link = figure.resolve().relative_to(docs.resolve()).as_posix()
        except ValueError:
            (docs / "results").mkdir(exist_ok=True)
            shutil.copy(figure, docs / "results" / "gpu_fashion_mnist_knn_curves.png")
            link = "results/gpu_fashion_mnist_knn_curves.png"
    commands = "; ".join(f"`{run['command']}`" for run in evidence["runs"])
    source = f"{machine_line(evidence)} Commands: {commands}."
    perf = [source, "", *demote(correctness_markdown(evidence.get("correctness")))]
    perf += demote(throughput_markdown(evidence.get("throughput")))
    results = [source, ""]
    quality = evidence.get("quality")
    if quality:
        results += quality_markdown(quality)[2:]
        if link is not None:
            results += [f"![k-NN versus step on the GPU]({link})", ""]
    else:
        results += ["Quality stage not run.", ""]
    written = []
    for name, body in (("performance.md", perf), ("results.md", results)):
        path = docs / name
        path.write_text(replace_block(path.read_text(), "\n".join(body)))
        written.append(path)
    return written


def replace_block(text: str, body: str) -> str:
    """``text`` with the part between the begin and end markers replaced by ``body``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[: start + len(BEGIN)] + "\n" + body.strip() + "\n" + text[end:]


# ---------------------------------------------------------------------------------- main
def make_dry_data(folder: Path) -> Path:
    """A Fashion-MNIST-like folder of random IDX files (256 train, 64 test images)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 256), ("t10k", 64)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(n).to_bytes(4, "big") for n in array.shape
            )
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(header + array.tobytes())
    return folder


def collect(ctx: Context, stages: Sequence[str], command: str) -> dict[str, Any]:
    """Run ``stages`` in order, writing the report after each; returns the evidence."""
    evidence: dict[str, Any] = {
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dry_run": ctx.dry_run,
        "budgets_s": {s: None if math.isinf(ctx.budget(s)) else ctx.budget(s) for s in stages},
        "environment": environment(),
        "stages": [],
    }
    write_report(evidence, ctx.output)
    for stage in stages:
        started = time.perf_counter()
        limit = "none" if math.isinf(ctx.budget(stage)) else f"{ctx.budget(stage):.0f} s"
        print(f"[gpu-evidence] {stage}: budget {limit}", flush=True)
        try:
            evidence[stage] = STAGES[stage](ctx)
        except Exception as err:  # the next stage still runs; the report names the failure
            evidence[stage] = {"status": f"error: {type(err).__name__}: {err}"}
        seconds = time.perf_counter() - started
        status = evidence[stage]["status"]
        evidence["stages"].append({"stage": stage, "status": status, "seconds": seconds})
        print(f"[gpu-evidence] {stage}: {status} in {seconds:.0f} s", flush=True)
        write_report(evidence, ctx.output)
    with tarfile.open(ctx.output / "logs.tar.gz", "w:gz") as tar:
        for log in sorted(ctx.work.glob("*.log")):
            tar.add(log, arcname=log.name)
    return evidence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="folder for evidence.json and evidence.md")
    parser.add_argument("--work", type=Path, help="folder for logs and runs (default OUTPUT/work)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--device", help="default: cuda (cpu for --dry-run)")
    parser.add_argument(
        "--data", type=Path, help=f"Fashion-MNIST IDX folder (default {DEFAULT_DATA})"
    )
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--quality-steps", type=int, help="optimiser steps per quality run")
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="time budget of one stage (repeatable); defaults: "
        + ", ".join(f"{k}={v:.0f}" for k, v in BUDGETS.items()),
    )
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        metavar="EVIDENCE_JSON",
        help="update docs/ from these evidence files (oldest first; later stages win)",
    )
    parser.add_argument(
        "--tables",
        default="k65536,k10000,compile",
        help="throughput tables to run, among k65536, k10000, compile",
    )
    parser.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.render is not None:
        missing = [str(p) for p in args.render if not p.is_file()]
        if missing:
            parser.error(f"--render: {', '.join(missing)} not found")
        try:
            for path in render_docs(args.render):
                print(f"updated {path}")
        except ValueError as err:
            parser.error(str(err))
        return 0
    if args.profile is not None:
        result = profile_patch_step(device, args.dry_run)
        args.profile.write_text(json.dumps(result, indent=1))
        return 0
    if args.output is None:
        parser.error("--output is required (or --render)")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here; use --dry-run for a CPU check of the kit")
    work = args.work or args.output / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    data = args.data or (make_dry_data(work / "data") if args.dry_run else DEFAULT_DATA)
    if "quality" in stages and not any(data.glob("train-images-idx3-ubyte*")):
        parser.error(f"no Fashion-MNIST IDX files in {data}; run `make gpu-data` or pass --data")
    tables = tuple(t.strip() for t in args.tables.split(",") if t.strip())
    if not tables or any(t not in ("k65536", "k10000", "compile") for t in tables):
        parser.error(f"--tables {args.tables!r}: choose among k65536, k10000, compile")
    budgets = dict(DRY_BUDGETS if args.dry_run else BUDGETS)
    for item in args.budget:
        stage, _, seconds = item.partition("=")
        if stage not in STAGES or not re.fullmatch(r"\d+(\.\d*)?", seconds):
            parser.error(f"--budget {item!r} must be STAGE=SECONDS with a stage of {list(STAGES)}")
        budgets[stage] = float(seconds)
    ctx = Context(
        output=args.output,
        work=work,
        dry_run=args.dry_run,
        device=device,
        data=data.resolve(),
        quality_steps=args.quality_steps or (4 if args.dry_run else 800),
        budgets=budgets,
        tables=tables,
    )
    command = " ".join(["python", "benchmarks/gpu_evidence.py", *(argv or sys.argv[1:])])
    evidence = collect(ctx, stages, command)
    bad = [s["stage"] for s in evidence["stages"] if s["status"] not in ("ok", "skipped")]
    print(f"[gpu-evidence] wrote {args.output / 'evidence.json'}; not ok: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
