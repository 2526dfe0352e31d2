"""The default test suite on a loaded machine: does any verdict depend on the machine's speed?

Starts ``--competitors`` copies of a competing process (by default the two-threaded PyTorch
job of ``benchmarks/cpu_threads.py``), waits ``--settle`` seconds, then runs the default suite
(``pytest -q -m "not slow"``, what ``make test`` runs after the linters) beside them, sampling
``/proc/loadavg`` every ``--sample`` seconds. It writes the suite's counts, failing tests, wall
time, the load seen and the machine to ``--output`` (JSON). The competitors are stopped however
the suite ends. A verdict that changes here and not alone is a test that depends on time.

Usage (from the repository root, with the package installed, e.g. ``make install``)::

    .venv/bin/python benchmarks/loaded_suite.py --output docs/results/loaded_suite/suite.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from cpu_threads import COMPETITORS
from gpu_evidence import junit_summary
from patchdino.bench.runner import machine_info

ROOT = Path(__file__).resolve().parents[1]


def sample_load(every: float, stop: threading.Event, into: list[float]) -> None:
    """Append the 1-minute load average to ``into`` every ``every`` seconds until ``stop``."""
    while not stop.wait(every):
        with open("/proc/loadavg") as handle:
            into.append(float(handle.read().split()[0]))


def run_suite(
    competitor: list[str],
    count: int,
    settle: float,
    sample: float,
    pytest_args: list[str],
    tail: int = 40,
) -> dict[str, Any]:
    """Run pytest beside ``count`` copies of ``competitor``: counts, failures, time, load and
    the last ``tail`` lines of pytest's output."""
    others = [
        subprocess.Popen(competitor, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    loads: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_load, args=(sample, stop, loads), daemon=True)
    try:
        time.sleep(settle)
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "suite.xml"
            command = [sys.executable, "-m", "pytest", *pytest_args, f"--junitxml={report}"]
            sampler.start()
            start = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.monotonic() - start
            summary = junit_summary(report) if report.exists() else {}
    finally:
        stop.set()
        for other in others:
            other.kill()
            other.wait()
    lines = done.stdout.strip().splitlines() or [""]
    return {
        "command": command[:-1],
        "returncode": done.returncode,
        "seconds": round(seconds, 1),
        "last_line": lines[-1],
        "tail": lines[-tail:],
        **summary,
        "load_1min": {
            "samples": len(loads),
            "min": min(loads, default=None),
            "median": statistics.median(loads) if loads else None,
            "max": max(loads, default=None),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--competitor", default="torch_2_threads", choices=[n for n, c in COMPETITORS.items() if c]
    )
    parser.add_argument("--competitors", type=int, default=2, help="how many run beside it")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the suite")
    parser.add_argument("--sample", type=float, default=15.0, help="seconds between loads")
    parser.add_argument("--output", type=Path, required=True, help="JSON file of the result")
    parser.add_argument(
        "pytest_args", nargs="*", default=["-q", "-m", "not slow", "-p", "no:cacheprovider"]
    )
    args = parser.parse_args(argv)
    name = args.competitor
    competitor = COMPETITORS[name]
    assert competitor is not None
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    suite = run_suite(competitor, args.competitors, args.settle, args.sample, args.pytest_args)
    result = {
        "machine": {**machine_info(torch.device("cpu")), "python": platform.python_version()},
        "competitor": {"name": name, "command": competitor, "count": args.competitors},
        "started": started,
        "suite": suite,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{suite['last_line']} ({suite['seconds']:.0f} s, load {suite['load_1min']})")
    return 0 if suite["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
