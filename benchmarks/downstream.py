"""Downstream evaluations of several networks on Fashion-MNIST, as mean ± std over seeds.

For every ``LABEL=WEIGHTS[,WEIGHTS...]`` (one weights file or run folder per seed, ``random``
or ``pixels``), runs the chosen tasks one after the other in this process, through the same
command-line functions a user calls, and writes each command's JSON plus a markdown table:

- ``segment``: the linear segmentation probe on the Fashion-MNIST task (mIoU, pixel accuracy);
- ``propagate``: label propagation on a Moving Fashion-MNIST folder (J&F, J, F);
- ``copydetect``: the test images as database, a folder of strong copies as queries (mAP,
  top-1);
- ``retrieve``: label retrieval, each test image querying the training set (mAP@R, R@1).

Tasks that need a network skip ``pixels``.

Example (the numbers in docs/results.md):

    patchdino propagate --make-videos runs/moving_fashion
    patchdino copydetect --make-queries --source /usr/share/datasets/fashion-mnist \
        --output runs/copies --count 2000 --seed 0
    python benchmarks/downstream.py --videos runs/moving_fashion --copies runs/copies \
        --weights random=random dino=runs/q3_s0/dino_seed0,runs/q3_s1/dino_seed1 \
        --output runs/downstream
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from patchdino.cli.main import main as patchdino
from quality import paired_difference

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
TASKS = ("segment", "propagate", "copydetect", "retrieve")
NETWORK_ONLY = ("segment", "propagate")
"""Tasks without a raw-pixel baseline."""
COLUMNS = (
    ("segment", "miou", "segmentation mIoU (%)"),
    ("segment", "pixel_accuracy", "pixel accuracy (%)"),
    ("propagate", "JF_mean", "J&F (%)"),
    ("propagate", "J_mean", "J (%)"),
    ("propagate", "F_mean", "F (%)"),
    ("copydetect", "map", "copy detection mAP (%)"),
    ("copydetect", "top1", "copy detection top-1 (%)"),
    ("retrieve", "map_at_r", "retrieval mAP@R (%)"),
    ("retrieve", "recall_1", "retrieval R@1 (%)"),
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


def task_command(args: argparse.Namespace, task: str, folder: Path) -> tuple[list[str], Path]:
    """The command line of one task and the JSON file it writes."""
    if task == "segment":
        output = folder / "segment.json"
        line = ["segment", "--data", args.fashion_mnist, "--epochs", str(args.seg_epochs)]
    elif task == "propagate":
        output = folder / "propagate" / "results.json"
        return ["propagate", "--data", args.videos, "--output", str(output.parent)], output
    elif task == "copydetect":
        output = folder / "copydetect.json"
        copies = Path(args.copies)
        line = ["copydetect", "--database", args.fashion_mnist, "--split", "test"]
        line += ["--queries", str(copies / "queries")]
        line += ["--ground-truth", str(copies / "ground_truth.json")]
    else:
        output = folder / "retrieve.json"
        line = ["retrieve", "--data", args.fashion_mnist]
    return [*line, "--output", str(output)], output


def task_values(task: str, record: dict[str, Any]) -> dict[str, float]:
    """The table's numbers of one command's JSON (every one of them in percent)."""
    if task == "propagate":
        return {k: float(v) for k, v in record["overall"].items() if v is not None}
    values = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
    if task == "retrieve":
        values["recall_1"] = float(record["recall"]["1"])
    return values


def run_one(args: argparse.Namespace, weights: str, folder: Path) -> dict[str, Any]:
    """Every task for one network; returns their numbers and CPU seconds."""
    record: dict[str, Any] = {"weights": weights}
    for task in args.tasks:
        if weights == "pixels" and task in NETWORK_ONLY:
            continue
        common = ["--weights", weights, "--device", args.device, "--no-progress"]
        if weights == "random":  # trained weights carry their own architecture
            common += ["--config", args.config]
        line, output = task_command(args, task, folder)
        started = time.process_time()
        if patchdino([*line, *common]) != 0:
            raise SystemExit(f"{task} failed for {weights}")
        record[task] = task_values(task, json.loads(output.read_text()))
        record[f"{task}_cpu_seconds"] = round(time.process_time() - started, 1)
    return record


def table(rows: dict[str, list[dict[str, Any]]], tasks: Sequence[str] = TASKS) -> str:
    """Markdown table of the columns of ``tasks``: mean ± std over the weights of each label."""
    columns = [column for column in COLUMNS if column[0] in tasks]
    head = "| weights | n | " + " | ".join(title for _, _, title in columns) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * len(columns)]
    for label, records in rows.items():
        cells = []
        for command, key, _ in columns:
            values = [float(r[command][key]) for r in records if key in r.get(command, {})]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.2f}")
            else:
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        lines.append(f"| {label} | {len(records)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(
    rows: dict[str, list[dict[str, Any]]], against: str, tasks: Sequence[str] = TASKS
) -> str:
    """Markdown table of each label's difference from label ``against``, paired by position
    (the n-th weights of every label are the same seed): mean ± std of the differences and the
    seeds with the sign of the mean, per column of ``tasks``."""
    columns = [column for column in COLUMNS if column[0] in tasks]
    head = " | ".join(f"Δ {title} | same sign" for _, _, title in columns)
    lines = [f"| weights | n | {head} |", "| --- | ---: |" + " ---: | ---: |" * len(columns)]
    for label, records in rows.items():
        if label == against:
            continue
        cells, count = [], 0
        for command, key, _ in columns:
            deltas = [
                float(mine[command][key]) - float(theirs[command][key])
                for mine, theirs in zip(records, rows[against])
                if key in mine.get(command, {}) and key in theirs.get(command, {})
            ]
            count = max(count, len(deltas))
            cells += list(paired_difference(deltas)) if deltas else ["-", "-"]
        lines.append(f"| {label} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge(
    folders: Sequence[Path], output: Path, tasks: Sequence[str], against: str | None = None
) -> None:
    """Rows of several output folders under one table, labels in order of appearance."""
    rows: dict[str, list[dict[str, Any]]] = {}
    commands = []
    for folder in folders:
        summary = json.loads((folder / "downstream.json").read_text())
        commands.append(summary["command"])
        for label, records in summary["rows"].items():
            rows.setdefault(label, []).extend(records)
    output.mkdir(parents=True, exist_ok=True)
    merged = {"commands": commands, "rows": rows}
    (output / "downstream.json").write_text(json.dumps(merged, indent=2) + "\n")
    text = table(rows, tasks)
    if against:
        text += "\n\n" + paired_table(rows, against, tasks)
    (output / "table.md").write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", metavar="LABEL=W[,W...]")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="combine the output folders of earlier runs (e.g. one per network) into --output",
    )
    parser.add_argument(
        "--against",
        metavar="LABEL",
        help="with --merge: also each label's per-seed difference from this one",
    )
    parser.add_argument(
        "--tasks", type=lambda text: text.split(","), default=list(TASKS), help=",".join(TASKS)
    )
    parser.add_argument("--videos", help="Moving Fashion-MNIST (DAVIS layout), for propagate")
    parser.add_argument("--copies", help="folder of copydetect --make-queries, for copydetect")
    parser.add_argument("--fashion-mnist", default=FASHION_MNIST, help="IDX folder")
    parser.add_argument("--config", default="fashion_mnist_tiny", help="architecture of random")
    parser.add_argument("--seg-epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.output, args.tasks, args.against)
        return
    if not args.weights:
        parser.error("give --weights (or --merge)")
    unknown = [task for task in args.tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose among {', '.join(TASKS)}")
    for task, option in (("propagate", "videos"), ("copydetect", "copies")):
        if task in args.tasks and getattr(args, option) is None:
            parser.error(f"{task} needs --{option}")

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
            (args.output / "downstream.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = table(rows, args.tasks)
    (args.output / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
