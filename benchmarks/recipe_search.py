"""Search the CPU recipe: pretrain candidate settings one after another and rank them by k-NN
accuracy on a validation split held out of the training set (never the test set).

Each candidate is a named list of ``key=value`` overrides of ``--config``; every candidate
pretrains on the training images minus ``--holdout`` held-out ones (``data.holdout``) and is
evaluated by k-NN (k = 20, CLS of the teacher) with the remaining training images as memory
and the held-out ones as queries, at a few points of the run (on fixed subsets) and at the end
(all of them). Results are appended to ``results.jsonl`` in ``--output`` as each candidate
finishes, and ``table.md`` is rewritten, so an interrupted search keeps what it measured;
the same command again skips the candidates already in ``results.jsonl``. ``--ablation`` adds
the rows of ``benchmarks/quality.py``'s ablation as candidates.

Run one search at a time on an otherwise idle machine: the minutes are part of the result.

    python benchmarks/recipe_search.py --candidates base,head256 --epochs 1 \
        --output runs/recipe_search
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from patchdino.config import load_config
from quality import (
    ABLATION,
    VARIANTS,
    Evaluator,
    baselines,
    paired_difference,
    pixel_images,
    run_variant,
)

CANDIDATES: dict[str, list[str]] = {
    "base": [],
    "head256": ["model.hidden_dim=256", "model.bottleneck_dim=64"],
    "split": ["loss.cls_weighting=split"],
    "head256_split": [
        "model.hidden_dim=256",
        "model.bottleneck_dim=64",
        "loss.cls_weighting=split",
    ],
    "lr2x": ["optim.lr=0.008"],
    "lr_half": ["optim.lr=0.002"],
    "mom996": ["optim.momentum_teacher=0.996"],
    "mom98": ["optim.momentum_teacher=0.98"],
    "mom95": ["optim.momentum_teacher=0.95"],
    "mom98_lr2x": ["optim.momentum_teacher=0.98", "optim.lr=0.008"],
    "mom98_head256": [
        "optim.momentum_teacher=0.98",
        "model.hidden_dim=256",
        "model.bottleneck_dim=64",
    ],
    "mom98_pairs2": ["optim.momentum_teacher=0.98", "loss.terms.patch.pairs_per_view=2"],
    "mom98_lr2x_head256": [
        "optim.momentum_teacher=0.98",
        "optim.lr=0.008",
        "model.hidden_dim=256",
        "model.bottleneck_dim=64",
    ],
    "tt07": ["loss.teacher_temp=0.07", "loss.warmup_teacher_temp=0.04"],
    "out1024": ["model.out_dim=1024", "model.patch_out_dim=1024"],
    "out4096": ["model.out_dim=4096", "model.patch_out_dim=4096"],
    "wd": ["optim.weight_decay=0.04", "optim.weight_decay_end=0.04"],
    "local6": ["views.num_local=6"],
    "local8": ["views.num_local=8"],
    "gscale": ["views.global_scale=[0.3,1.0]", "views.local_scale=[0.1,0.3]"],
    "noblur": ["views.blur_p=[0.0,0.0,0.0]"],
    "nearest": ["loss.terms.patch.matching=nearest"],
    "dino": ["loss.terms.patch.weight=0"],
    "batch128": ["optim.batch_size=128"],
    "batch32": ["optim.batch_size=32"],
    # DINOv2-era loss terms on the recipe (docs/results.md, "Beyond the paper").
    "masked": ["loss.terms.masked.weight=1"],
    "koleo": ["loss.terms.koleo.weight=0.1"],
    "sinkhorn": ["loss.centring=sinkhorn"],
    "dinov2_style": [
        "loss.terms.patch.weight=0",
        "loss.terms.masked.weight=1",
        "loss.terms.koleo.weight=0.1",
        "loss.centring=sinkhorn",
    ],
    "dinov2_matched": [
        "loss.terms.masked.weight=1",
        "loss.terms.koleo.weight=0.1",
        "loss.centring=sinkhorn",
    ],
    # Register tokens (docs/results.md, "Register tokens").
    "reg4": ["model.registers=4"],
}
"""Named candidates; any other setting can be tried with ``--try NAME:key=value,...``."""


def parse_try(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition(":")
    overrides = [o.strip() for o in rest.split(",") if o.strip()] if sep else []
    if not name or not overrides or any("=" not in o for o in overrides):
        raise argparse.ArgumentTypeError(f"--try {text!r} must look like NAME:key=value,...")
    return name, overrides


RESULTS = "results.jsonl"
"""The file of a search folder holding one JSON record per measured candidate."""


def read_results(folder: Path) -> list[dict[str, Any]]:
    """The records of ``folder``'s results file, in the order measured."""
    return [json.loads(line) for line in (folder / RESULTS).read_text().splitlines()]


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of the results, best validation k-NN first."""
    lines = [
        "| candidate | overrides | val k-NN CLS (%) | mean | both | curve (step: CLS k-NN) "
        "| train min | img/s |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: -r["knn20"]):
        curve = ", ".join(f"{s}: {v:.1f}" for s, v in r["curve"])
        lines.append(
            f"| {r['candidate']} | `{' '.join(r['overrides']) or '-'}` | {r['knn20']:.2f} | "
            f"{r.get('knn20_mean', math.nan):.2f} | {r.get('knn20_both', math.nan):.2f} | "
            f"{curve} | {r['train_seconds'] / 60:.1f} | {r['images_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def seed_table(folders: list[Path]) -> str:
    """Markdown table of the candidates found in several search folders (one per seed):
    mean ± standard deviation over the seeds of each (no times: the folders may come from
    runs with different thread counts or load)."""
    results = [record for folder in folders for record in read_results(folder)]
    lines = [
        "| candidate | seeds | val k-NN CLS (%) | mean patch token | both | linear CLS (%) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["candidate"] for r in results):
        group = [r for r in results if r["candidate"] == name]

        def cell(key: str, group: list[dict[str, Any]] = group) -> str:
            values = [r[key] for r in group if not math.isnan(r.get(key, math.nan))]
            if not values:
                return "-"
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.2f} ± {spread:.2f}"

        lines.append(
            f"| {name} | {len(group)} | {cell('knn20')} | {cell('knn20_mean')} | "
            f"{cell('knn20_both')} | {cell('linear_top1')} |"
        )
    return "\n".join(lines) + "\n"


PAIRED_KEYS = (
    ("knn20", "CLS k-NN"),
    ("knn20_mean", "mean patch token k-NN"),
    ("linear_top1", "linear"),
)
"""The measures :func:`paired_table` compares, with their column titles."""


def paired_table(folders: list[Path], against: str) -> str:
    """Markdown table of each candidate's difference from candidate ``against``, paired by
    folder (one folder per seed): mean ± standard deviation of the per-seed differences, and
    in how many seeds the difference has the sign of that mean."""
    per_folder = [{r["candidate"]: r for r in read_results(folder)} for folder in folders]
    names = [n for n in dict.fromkeys(n for runs in per_folder for n in runs) if n != against]
    titles = " | ".join(f"Δ {title} (points) | same sign" for _, title in PAIRED_KEYS)
    lines = [
        f"| candidate | seeds | {titles} |",
        "| --- | ---: |" + " ---: | ---: |" * len(PAIRED_KEYS),
    ]
    for name in names:
        cells, seeds = [], 0
        for key, _ in PAIRED_KEYS:
            deltas = [
                runs[name][key] - runs[against][key]
                for runs in per_folder
                if name in runs
                and against in runs
                and not math.isnan(runs[name].get(key, math.nan))
                and not math.isnan(runs[against].get(key, math.nan))
            ]
            seeds = max(seeds, len(deltas))
            cells += list(paired_difference(deltas)) if deltas else ["-", "-"]
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curve_figure(folder: Path, path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Plot each run of ``folder`` as k-NN (curve subsets) against training minutes, with raw
    pixels on the same subsets as a line; returns that pixel score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchdino.eval import knn_classify, pixel_features, pixel_statistics

    results = read_results(folder)
    common = [*args.overrides, f"data.holdout={args.holdout}"]
    config = load_config(args.config, common + ([f"data.path='{args.data}'"] if args.data else []))
    evaluator = Evaluator(config, torch.device("cpu"), args.curve_train, args.curve_test)
    train = pixel_images(evaluator.train)[evaluator.curve_train.sort().values]
    test = pixel_images(evaluator.test)[evaluator.curve_test.sort().values]
    mean, std = pixel_statistics(train)
    pixels = knn_classify(
        pixel_features(train, mean, std),
        evaluator.train.labels[evaluator.curve_train.sort().values],
        pixel_features(test, mean, std),
        evaluator.test.labels[evaluator.curve_test.sort().values],
        ks=(20,),
    ).top1[20]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for result in results:
        minutes = [seconds / 60 for _, seconds, _ in result["curve_seconds"]]
        ax.plot(minutes, [v for _, v in result["curve"]], marker="o", label=result["candidate"])
    ax.axhline(pixels, color="black", linestyle="--", label=f"raw pixels ({pixels:.2f})")
    ax.set_xlabel("training minutes (this machine, as run)")
    ax.set_ylabel("k-NN top-1 (%), k = 20, validation subsets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"pixels_on_curve_subsets": pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_mnist_tiny")
    parser.add_argument("--data", help="data set folder (default: the config's)")
    parser.add_argument(
        "--candidates", default="", help=f"comma-separated among {list(CANDIDATES)}"
    )
    parser.add_argument(
        "--try",
        dest="tries",
        action="append",
        type=parse_try,
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="an extra candidate (repeatable)",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="add the rows of benchmarks/quality.py's ablation as candidates (named as there)",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="pretraining epochs each")
    parser.add_argument("--evals", type=int, default=3, help="k-NN curve points per run")
    parser.add_argument("--holdout", type=int, default=10000, help="held-out training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curve-train", type=int, default=10000)
    parser.add_argument("--curve-test", type=int, default=2000)
    parser.add_argument("--probe-epochs", type=int, default=0, help="0: no linear probe")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("runs/recipe_search"))
    parser.add_argument(
        "--seeds-table",
        type=Path,
        nargs="+",
        metavar="FOLDER",
        help="print the mean ± std table of earlier searches (one folder per seed) and stop",
    )
    parser.add_argument(
        "--against",
        metavar="CANDIDATE",
        help="with --seeds-table: also each candidate's per-seed difference from this one",
    )
    parser.add_argument(
        "--curve-figure",
        nargs=2,
        metavar=("FOLDER", "PNG"),
        help="plot the k-NN curves of an earlier search against training minutes and stop",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="for every candidate")
    args = parser.parse_args()
    if args.seeds_table:
        print(seed_table(args.seeds_table), end="")
        if args.against:
            print("\n" + paired_table(args.seeds_table, args.against), end="")
        return
    if args.curve_figure:
        folder, figure = args.curve_figure
        print(json.dumps(curve_figure(Path(folder), Path(figure), args)))
        return
    chosen = [c for c in args.candidates.split(",") if c]
    unknown = [c for c in chosen if c not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    candidates = [(c, CANDIDATES[c]) for c in chosen] + list(args.tries)
    if args.ablation:
        candidates += [(name, VARIANTS[name]) for name in ABLATION]
    if not candidates:
        parser.error("no candidates: give --candidates and/or --try")
    args.output.mkdir(parents=True, exist_ok=True)
    log = args.output / RESULTS
    results = read_results(args.output) if log.exists() else []
    device = torch.device(args.device)
    common = [*args.overrides, f"data.holdout={args.holdout}"]
    if args.data:
        common.append(f"data.path='{args.data}'")
    reference = args.output / "baselines.json"
    if not reference.exists():  # random weights and raw pixels on the same split, once
        config = load_config(args.config, common)
        evaluator = Evaluator(config, device, args.curve_train, args.curve_test)
        reference.write_text(json.dumps(baselines(config, evaluator, args), indent=1))
    print(f"baselines on the validation split: {reference.read_text()}", flush=True)
    done = {r["candidate"] for r in results}
    for name, own in candidates:
        if name in done:  # measured by an earlier, interrupted call with this output
            print(f"{name}: already in {log}", flush=True)
            continue
        overrides = [*common, *own]
        config = load_config(args.config, overrides)
        evaluator = Evaluator(config, device, args.curve_train, args.curve_test)
        per_epoch = len(evaluator.train) // config.optim.batch_size
        steps = max(1, round(args.epochs * per_epoch))
        run_args = argparse.Namespace(
            steps=steps,
            eval_every=max(1, steps // args.evals),
            device=args.device,
            overrides=overrides,
            data=None,
            output=args.output / name,
            probe_epochs=args.probe_epochs,
            config=args.config,
        )
        run_args.output.mkdir(parents=True, exist_ok=True)
        variant = "grid" if "loss.terms.patch.weight=0" not in own else "dino"
        print(f"{name}: {steps} steps of batch {config.optim.batch_size}", flush=True)
        result = run_variant(variant, args.seed, run_args, evaluator)
        result.update(
            candidate=name,
            overrides=own,
            steps=steps,
            batch_size=config.optim.batch_size,
            images_per_s=steps * config.optim.batch_size / result["train_seconds"],
            machine=f"{platform.machine()}, {torch.get_num_threads()} threads; torch "
            f"{torch.__version__}; device {args.device}",
            command=" ".join(["python", "benchmarks/recipe_search.py", *sys.argv[1:]]),
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        results.append(result)
        with log.open("a") as out:
            out.write(json.dumps(result) + "\n")
        (args.output / "table.md").write_text(table(results))
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
