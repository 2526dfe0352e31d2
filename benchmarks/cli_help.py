"""How fast the command line answers: ``patchdino --help`` and every ``COMMAND --help``.

Each is run as a fresh process (``python -m patchdino ...``) several times; the table gives the
median wall time and the median CPU time (user + system) of the child. For reference, the same
for a bare ``python -c "import torch"``. Usage::

    PYTHONPATH=src python benchmarks/cli_help.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from patchdino.cli.main import COMMANDS


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    python = [sys.executable]
    cases: dict[str, list[str]] = {"patchdino --help": [*python, "-m", "patchdino", "--help"]}
    for name in COMMANDS:
        cases[f"patchdino {name} --help"] = [*python, "-m", "patchdino", name, "--help"]
    cases['python -c "import torch"'] = [*python, "-c", "import torch"]
    print(f"{platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}")
    print(f"median of {args.repeats} runs; load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'command':36s} {'wall s':>7s} {'CPU s':>7s}")
    for name, line in cases.items():
        runs = [timed(line) for _ in range(args.repeats)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:36s} {wall:7.2f} {cpu:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
