"""Training speed on a shared CPU: each ``run.cpu_threads`` setting alone and beside others.

For every competitor (none; one busy single-threaded process; a two-threaded PyTorch job)
and every setting (a fixed number, or ``auto``, the default adaptive choice), it starts
``patchdino pretrain`` (the packaged ``fashion_mnist_tiny`` recipe unless ``--config``),
lets it train ``--seconds`` seconds, stops it with SIGTERM (it saves and exits) and reads its
``metrics.jsonl``: the median ``images_per_s`` of the steps after the first ``--warmup``
share, and which thread counts the steps used. One job at a time besides the competitor;
``--repeats`` rounds over every cell, interleaved, each round starting at another setting,
and the median of the rounds.
Usage::

    PYTHONPATH=src python benchmarks/cpu_threads.py --data /usr/share/datasets/fashion-mnist \\
        --output docs/raw/cpu_threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

COMPETITORS = {
    "alone": None,
    "busy_process": [sys.executable, "-c", "while True: pass"],
    "torch_2_threads": [
        sys.executable,
        "-c",
        "import torch; torch.set_num_threads(2); x = torch.randn(600, 600)\n"
        "while True: x = (x @ x).tanh()",
    ],
}
"""Name and command of each competitor (None: no other process)."""


def speed(args: argparse.Namespace, setting: str, folder: Path) -> dict[str, Any]:
    """Train ``args.seconds`` seconds with ``run.cpu_threads`` = ``setting``; its speed."""
    run = folder / f"run-{setting}"
    shutil.rmtree(run, ignore_errors=True)
    value = "null" if setting == "auto" else setting
    command = [sys.executable, "-m", "patchdino", "pretrain", "--config", args.config]
    command += ["--data", str(args.data), "--output", str(run), "--no-progress"]
    command += [f"run.cpu_threads={value}", "run.loggers=[jsonl]", "run.save_every=1000000"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + args.start_timeout
    while not metrics.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # data loading and model building are not timed
    time.sleep(args.seconds)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=600)
    if not metrics.exists():
        raise RuntimeError(f"{setting}: no metrics (rc {job.returncode}): {err.decode()[-500:]}")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    timed = records[int(len(records) * args.warmup) :]
    rates = [r["images_per_s"] for r in timed if r.get("images_per_s") is not None]
    return {
        "setting": setting,
        "steps": len(records),
        "timed_steps": len(rates),
        "images_per_s_median": statistics.median(rates) if rates else None,
        "threads_used": dict(Counter(str(r.get("cpu_threads")) for r in timed)),
        "returncode": job.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the Fashion-MNIST folder")
    parser.add_argument("--config", default="fashion_mnist_tiny", help="config name or file")
    parser.add_argument("--settings", nargs="+", default=["1", "2", "auto"])
    parser.add_argument("--competitors", nargs="+", default=list(COMPETITORS))
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per job")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of steps not timed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every cell")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, help="JSON file of the results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.competitors) - set(COMPETITORS))
    if unknown:
        parser.error(f"unknown competitors {unknown}; choose from {list(COMPETITORS)}")

    folder = Path(tempfile.mkdtemp(prefix="cpu_threads_"))
    rows = []
    try:
        for repeat in range(args.repeats):  # interleaved, so that slow spells hit every cell
            for name in args.competitors:
                other, competitor = None, COMPETITORS[name]
                if competitor is not None:
                    other = subprocess.Popen(competitor, stdout=subprocess.DEVNULL)
                    time.sleep(2.0)
                try:
                    # Each round starts at another setting: the order itself moved speeds.
                    shift = repeat % len(args.settings)
                    for setting in args.settings[shift:] + args.settings[:shift]:
                        row = {"repeat": repeat, "competitor": name}
                        row |= speed(args, setting, folder)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    if other is not None:
                        other.kill()
                        other.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{'competitor':<16} {'setting':>7} {'img/s':>8}  each repeat; threads used")
    summary = []
    for name in args.competitors:
        for setting in args.settings:
            cell = [r for r in rows if r["competitor"] == name and r["setting"] == setting]
            rates = [r["images_per_s_median"] for r in cell if r["images_per_s_median"]]
            used = Counter[str]()
            for r in cell:
                used.update(r["threads_used"])
            median = statistics.median(rates) if rates else None
            summary.append({"competitor": name, "setting": setting, "images_per_s": median})
            each = ", ".join(f"{v:.0f}" for v in rates)
            shown = f"{median:8.1f}" if median is not None else f"{'-':>8}"
            print(f"{name:<16} {setting:>7} {shown}  {each}; {dict(used)}")
    if args.output is not None:
        record = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{len(os.sched_getaffinity(0))} usable",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": " ".join(["python", "benchmarks/cpu_threads.py", *(argv or sys.argv[1:])]),
            "summary": summary,
            "rows": rows,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
