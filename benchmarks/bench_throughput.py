"""Training-step throughput: the same benchmark as ``patchdino bench``, always writing JSON.

Takes every option of ``patchdino bench``; without ``--json`` the results go to
``bench_throughput.json`` in the current folder.

Example (the paper's setting on one GPU):
    python benchmarks/bench_throughput.py --device cuda --batch-size 128 --json h100.json
"""

from __future__ import annotations

import sys

from patchdino.cli.main import main

DEFAULT_JSON = "bench_throughput.json"


def run(argv: list[str]) -> int:
    """``patchdino bench`` with ``argv``, adding ``--json`` when it is missing."""
    has_json = any(a == "--json" or a.startswith("--json=") for a in argv)
    return main(["bench", *argv, *([] if has_json else ["--json", DEFAULT_JSON])])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
