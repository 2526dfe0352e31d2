"""Dense evaluations of several networks: segmentation probe and video label propagation.

For every ``LABEL=WEIGHTS[,WEIGHTS...]`` (one weights file or run folder per seed, or
``random``), runs ``patchdino segment`` on the Fashion-MNIST segmentation task and
``patchdino propagate`` on a Moving Fashion-MNIST folder, one after the other in this process,
and writes each command's JSON plus a table of mean ± std over the weights of a label.

Example (the numbers in docs/results.md):

    patchdino propagate --make-videos runs/moving_fashion
    python benchmarks/dense.py --videos runs/moving_fashion --config fashion_mnist_tiny \
        --weights random=random dino=runs/q3_s0/dino_seed0,runs/q3_s1/dino_seed0 \
        --output runs/dense
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from patchdino.cli.main import main as patchdino

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
COLUMNS = (
    ("segment", "miou", "segmentation mIoU (%)"),
    ("segment", "pixel_accuracy", "pixel accuracy (%)"),
    ("propagate", "JF_mean", "J&F (%)"),
    ("propagate", "J_mean", "J (%)"),
    ("propagate", "F_mean", "F (%)"),
)


def parse_weights(items: list[str]) -> dict[str, list[str]]:
    """``["dino=a,b", "random=random"]`` to ``{"dino": ["a", "b"], "random": ["random"]}``."""
    parsed: dict[str, list[str]] = {}
    for item in items:
        label, sep, paths = item.partition("=")
        if not sep or not label or not paths:
            raise SystemExit(f"--weights entries are LABEL=WEIGHTS[,WEIGHTS...], got {item!r}")
        parsed[label] = paths.split(",")
    return parsed


def run_one(args: argparse.Namespace, weights: str, folder: Path) -> dict[str, Any]:
    """Both commands for one network; returns their records and CPU seconds."""
    common = ["--weights", weights, "--config", args.config, "--device", args.device]
    record: dict[str, Any] = {"weights": weights}
    started = time.process_time()
    segment = [
        "segment",
        "--data",
        args.fashion_mnist,
        "--output",
        str(folder / "segment.json"),
        "--epochs",
        str(args.seg_epochs),
        "--no-progress",
    ]
    if args.max_test:
        segment += ["--max-test", str(args.max_test)]
    if patchdino([*segment, *common]) != 0:
        raise SystemExit(f"segment failed for {weights}")
    record["segment"] = json.loads((folder / "segment.json").read_text())
    record["segment_cpu_seconds"] = round(time.process_time() - started, 1)
    started = time.process_time()
    propagate = ["propagate", "--data", args.videos, "--output", str(folder / "propagate")]
    if patchdino([*propagate, "--no-progress", *common]) != 0:
        raise SystemExit(f"propagate failed for {weights}")
    results = json.loads((folder / "propagate" / "results.json").read_text())
    record["propagate"] = {k: 100 * v for k, v in results["overall"].items() if v is not None}
    record["propagate_cpu_seconds"] = round(time.process_time() - started, 1)
    return record


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: mean ± std over the weights of each label."""
    head = "| weights | n | " + " | ".join(title for _, _, title in COLUMNS) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for label, records in rows.items():
        cells = []
        for command, key, _ in COLUMNS:
            values = [float(r[command][key]) for r in records if key in r[command]]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.2f}")
            else:
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        lines.append(f"| {label} | {len(records)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True, metavar="LABEL=W[,W...]")
    parser.add_argument("--videos", required=True, help="Moving Fashion-MNIST (DAVIS layout)")
    parser.add_argument("--fashion-mnist", default=FASHION_MNIST, help="IDX folder")
    parser.add_argument("--config", default="fashion_mnist_tiny", help="architecture of random")
    parser.add_argument("--seg-epochs", type=int, default=10)
    parser.add_argument("--max-test", type=int, help="segmentation: evaluate a subset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    labels = parse_weights(args.weights)
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, paths in labels.items():
        rows[label] = []
        for index, weights in enumerate(paths):
            folder = args.output / label / str(index)
            rows[label].append(run_one(args, weights, folder))
            summary = {
                "command": "python " + " ".join(sys.argv),
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                "torch": torch.__version__,
                "rows": rows,
            }
            (args.output / "dense.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = table(rows)
    (args.output / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
