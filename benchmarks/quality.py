"""Does the patch loss help? Pretrain variants with an identical budget, evaluate by k-NN and
a linear probe, and write a JSON summary plus k-NN-versus-step curves.

Every variant uses the same config, steps, batch, model, seed and augmentations; only the
method's options differ:

- ``dino``: patch loss off (plain DINO through the same code path);
- ``grid``: local-global loss with the paper's grid matching (patchdino's defaults);
- ``nearest``: local-global loss with nearest-centre matching;
- ``grid_sampled``: grid matching with at most 8 matched pairs per view pair (cheaper).

The rows of the reference-versus-patchdino table (docs/method.md section 6), each toggled
alone from ``grid``:

- ``cls_split``: ``loss.cls_weighting=split`` (fixed CLS and patch shares);
- ``centre_position``: ``loss.centre=position`` (one centre per token position, the
  reference's; ``fashion_mnist_tiny`` uses ``shared``, one for CLS and one for all patches);
- ``centre_shared``: ``loss.centre=shared`` (the same row for configs that keep ``position``);
- ``separate_head``: ``model.patch_head=separate`` (a head of their own for the patches);
- ``local_local``: ``loss.local_local=true`` (local views paired with each other too);
- ``centre_all``: ``loss.centre_tokens=all`` (centre statistics from every teacher token);
- ``per_batch``: ``views.geometry=per_batch`` (one crop geometry per batch);
- ``paper``: every behaviour row as the packaged ``paper`` preset sets it, at once (the
  head width stays the config's: it is a size, not a behaviour).

With ``data.holdout=N`` among the overrides, N training images are held out of pretraining and
serve as the queries of every evaluation instead of the test set (for choosing recipes).

Example (the numbers in docs/results.md):

    python benchmarks/quality.py --config fashion_mnist_tiny --steps 600 --seeds 0 \
        --eval-every 150 --output runs/quality

The ablation of the table's rows, one process per seed (S = 0, 1, 2), then merged:

    OMP_NUM_THREADS=1 python benchmarks/quality.py --config fashion_mnist_tiny --steps 2812 \
        --eval-every 703 --seeds S --variants ablation --output runs/ablation_sS
    python benchmarks/quality.py --merge runs/ablation_s0 runs/ablation_s1 runs/ablation_s2 \
        --output runs/ablation

``--variants ablation`` runs the variants of :data:`ABLATION`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from patchdino.config import Config, flatten_tree, load_config
from patchdino.data.datasets import normalisation
from patchdino.data.datasets.base import CanvasDataset
from patchdino.data.datasets.holdout import holdout_part
from patchdino.data.datasets.in_memory import InMemoryDataset
from patchdino.eval import extract_features, knn_classify, train_linear_probe
from patchdino.eval.common.backbone_loading import PooledBackbone
from patchdino.eval.common.eval_data import Normalise, eval_loader, open_split
from patchdino.train.build import data_kind, data_path
from patchdino.train.trainer import Trainer

PAPER_ROWS = (
    "views.geometry",
    "model.patch_head",
    "loss.terms.patch.weight",
    "loss.terms.patch.matching",
    "loss.cls_weighting",
    "loss.centre",
    "loss.centre_tokens",
    "loss.terms.patch.pairs_per_view",
    "loss.local_local",
)
"""The behaviour rows the ``paper`` variant takes from the packaged ``paper`` preset."""


def paper_overrides() -> list[str]:
    """``key=value`` overrides giving :data:`PAPER_ROWS` the ``paper`` preset's values."""
    paper = flatten_tree(load_config("paper").to_dict())
    values = {key: paper[key] for key in PAPER_ROWS}
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


VARIANTS: dict[str, list[str]] = {
    "dino": ["loss.terms.patch.weight=0"],
    "grid": ["loss.terms.patch.weight=1", "loss.terms.patch.matching=grid"],
    "nearest": ["loss.terms.patch.weight=1", "loss.terms.patch.matching=nearest"],
    "grid_sampled": [
        "loss.terms.patch.weight=1",
        "loss.terms.patch.matching=grid",
        "loss.terms.patch.pairs_per_view=8",
    ],
    "cls_split": ["loss.cls_weighting=split"],
    "centre_position": ["loss.centre=position"],
    "centre_shared": ["loss.centre=shared"],
    "separate_head": ["model.patch_head=separate"],
    "local_local": ["loss.local_local=true"],
    "centre_all": ["loss.centre_tokens=all"],
    "per_batch": ["views.geometry=per_batch"],
    "paper": paper_overrides(),
}

ABLATION = (
    "grid",
    "dino",
    "nearest",
    "cls_split",
    "centre_position",
    "separate_head",
    "grid_sampled",
    "local_local",
    "centre_all",
    "per_batch",
    "paper",
)
"""The default (``grid``) and each row of the reference-versus-patchdino table alone, then all
of them as the reference sets them (``paper``); ``--variants ablation`` runs these."""


class Evaluator:
    """k-NN (and, at the end, a linear probe) of a backbone on the train/test splits."""

    def __init__(self, config: Config, device: torch.device, curve_train: int, curve_test: int):
        self.kind = data_kind(config)
        path = str(data_path(config))
        size = config.views.global_size
        self.train = open_split(path, "train", self.kind, config.data.channels, size)
        if config.data.holdout:  # validation: the held-out training images are the queries
            self.test = holdout_part(self.train, config.data.holdout, "val")
            self.train = holdout_part(self.train, config.data.holdout, "train")
        else:
            self.test = open_split(path, "test", self.kind, config.data.channels, size)
        mean, std = normalisation(config, self.kind, int(self.train[0][0].shape[0]))
        self.normalise = Normalise(mean, std).to(device)
        self.size = size
        self.device = device
        generator = torch.Generator().manual_seed(0)
        self.curve_train = torch.randperm(len(self.train), generator=generator)[:curve_train]
        self.curve_test = torch.randperm(len(self.test), generator=generator)[:curve_test]

    def features(
        self,
        backbone: torch.nn.Module,
        split: str,
        indices: torch.Tensor | None,
        pool: str = "cls",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.train if split == "train" else self.test
        loader = eval_loader(
            dataset,
            self.kind,
            self.size,
            500,
            indices=None if indices is None else indices.sort().values,
        )
        return extract_features(
            PooledBackbone(backbone, pool),
            loader,
            self.device,
            transform=self.normalise,
            progress=False,
        )

    def knn_curve_point(self, backbone: torch.nn.Module) -> float:
        """k = 20 top-1 on the fixed curve subsets (memory and queries)."""
        train = self.features(backbone, "train", self.curve_train)
        test = self.features(backbone, "test", self.curve_test)
        return knn_classify(*train, *test, ks=(20,), device=self.device).top1[20]

    def final(self, backbone: torch.nn.Module, probe_epochs: int) -> dict[str, float]:
        """Full k-NN (all train images as memory, all test images) and a linear probe (NaN
        when ``probe_epochs`` is 0) on the CLS token; also k-NN on the mean patch token
        (``knn20_mean``) and on both concatenated (``knn20_both``)."""
        train, train_labels = self.features(backbone, "train", None, "both")
        test, test_labels = self.features(backbone, "test", None, "both")
        width = train.shape[1] // 2
        result = {}
        for key, columns in (
            ("knn20", slice(0, width)),
            ("knn20_mean", slice(width, None)),
            ("knn20_both", slice(None)),
        ):
            result[key] = knn_classify(
                train[:, columns],
                train_labels,
                test[:, columns],
                test_labels,
                ks=(20,),
                device=self.device,
            ).top1[20]
        result["linear_top1"] = math.nan
        if probe_epochs > 0:
            result["linear_top1"] = train_linear_probe(
                train[:, :width],
                train_labels,
                test[:, :width],
                test_labels,
                num_classes=int(self.train.num_classes or 0),
                epochs=probe_epochs,
                progress=False,
                device=self.device,
            ).top1
        return result


def run_variant(
    name: str, seed: int, args: argparse.Namespace, evaluator: Evaluator
) -> dict[str, Any]:
    overrides = [
        *VARIANTS[name],
        f"run.seed={seed}",
        f"run.max_steps={args.steps}",
        f"run.device={args.device}",
        f"run.save_every={args.steps}",
        *args.overrides,
    ]
    if args.data:
        overrides.append(f"data.path='{args.data}'")
    config = load_config(args.config, overrides)
    folder = args.output / f"{name}_seed{seed}"
    trainer = Trainer(config, folder, progress=False)
    curve: list[tuple[int, float]] = []
    started = time.perf_counter()
    train_seconds = train_cpu_seconds = 0.0
    curve_seconds: list[tuple[int, float, float]] = []  # (step, wall, CPU seconds of training)
    for until in range(args.eval_every, args.steps + 1, args.eval_every):
        tick, tick_cpu = time.perf_counter(), time.process_time()
        trainer.run(until=until)
        train_seconds += time.perf_counter() - tick
        train_cpu_seconds += time.process_time() - tick_cpu  # all threads of this process
        teacher = trainer.step_module.model.teacher.backbone.eval()
        curve.append((until, evaluator.knn_curve_point(teacher)))
        curve_seconds.append((until, train_seconds, train_cpu_seconds))
        print(f"  {name} seed {seed} step {until}: curve k-NN {curve[-1][1]:.2f}", flush=True)
        partial = {
            "variant": name,
            "seed": seed,
            "curve": curve,
            "curve_seconds": curve_seconds,
            "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds,
        }
        (args.output / f"partial_{name}_seed{seed}.json").write_text(json.dumps(partial))
    teacher = trainer.step_module.model.teacher.backbone.eval()
    result: dict[str, Any] = dict(evaluator.final(teacher, args.probe_epochs))
    result.update(
        variant=name,
        seed=seed,
        curve=curve,
        curve_seconds=curve_seconds,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
        seconds=time.perf_counter() - started,
    )
    print(
        f"  {name} seed {seed}: k-NN {result['knn20']:.2f}, linear "
        f"{result['linear_top1']:.2f}, {train_seconds / 60:.1f} min training",
        flush=True,
    )
    return result


def pixel_images(dataset: CanvasDataset) -> torch.Tensor:
    """The ``(N, C, H, W)`` uint8 images of an in-memory data set, for raw-pixel baselines."""
    if not isinstance(dataset, InMemoryDataset):
        raise SystemExit("raw-pixel baselines need an in-memory data set (IDX or CIFAR files)")
    return dataset.images


def baselines(
    config: Config, evaluator: Evaluator, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Random initialisation (same architecture) and raw pixels."""
    from patchdino.eval import pixel_features, pixel_statistics
    from patchdino.train.build import build_model

    torch.manual_seed(0)
    model = build_model(config, int(evaluator.train[0][0].shape[0]))
    random_init = evaluator.final(
        model.teacher.backbone.eval().to(evaluator.device), args.probe_epochs
    )
    train_images, test_images = pixel_images(evaluator.train), pixel_images(evaluator.test)
    mean, std = pixel_statistics(train_images)
    train = pixel_features(train_images, mean, std)
    test = pixel_features(test_images, mean, std)
    labels = evaluator.train.labels, evaluator.test.labels
    knn = knn_classify(train, labels[0], test, labels[1], ks=(20,), device=evaluator.device)
    return {"random": random_init, "pixels": {"knn20": knn.top1[20]}}


def paired_difference(deltas: list[float]) -> tuple[str, str]:
    """Cells for per-seed differences between two settings: ``"+m ± s"`` (mean and sample
    standard deviation, in points) and ``"k/n"``, the seeds whose difference has the sign of
    the mean."""
    mean = statistics.fmean(deltas)
    spread = statistics.stdev(deltas) if len(deltas) > 1 else 0.0
    agree = sum(1 for d in deltas if d * mean > 0)
    return f"{mean:+.2f} ± {spread:.2f}", f"{agree}/{len(deltas)}"


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        group = [r for r in runs if r["variant"] == name]
        row: dict[str, float] = {"seeds": len(group)}
        keys = ["knn20", "linear_top1", "train_seconds"]
        keys += [k for k in ("knn20_mean", "knn20_both") if all(k in r for r in group)]
        for key in keys:
            values = [r[key] for r in group]
            row[f"{key}_mean"] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_min"], row[f"{key}_max"] = min(values), max(values)
        table[name] = row
    return table


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    palette = plt.get_cmap("tab20")
    colours = {name: palette(i % palette.N) for i, name in enumerate(VARIANTS)}
    for run in runs:
        steps, values = zip(*run["curve"])
        ax.plot(
            steps,
            values,
            marker="o",
            color=colours[run["variant"]],
            alpha=0.85,
            label=f"{run['variant']} (seed {run['seed']})",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("k-NN top-1 (%), k = 20, curve subsets")
    ax.set_title("k-NN accuracy during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(folders: list[Path], output: Path) -> None:
    """One summary and one curve figure from runs made by separate processes."""
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    runs = [run for summary in summaries for run in summary["runs"]]
    measured = [s["baselines"] for s in summaries if s.get("baselines")]
    merged = dict(
        summaries[0],
        baselines=measured[0] if measured else {},
        runs=runs,
        table=summarise(runs),
        command=[s["command"] for s in summaries],
        minutes=max(s["minutes"] for s in summaries),
    )
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps(merged, indent=1))
    plot_curves(runs, output / "knn_curves.png")
    print(json.dumps({"table": merged["table"], "baselines": merged["baselines"]}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion_mnist_tiny")
    parser.add_argument("--data", help="data set folder (default: the config's)")
    parser.add_argument(
        "--variants",
        default="dino,grid,nearest",
        help=f"comma-separated subset of {', '.join(VARIANTS)}, or ablation (all of the "
        "reference-versus-patchdino rows)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--curve-train", type=int, default=10000)
    parser.add_argument("--curve-test", type=int, default=2000)
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--skip-baselines",
        action="store_true",
        help="do not evaluate random weights and raw pixels (e.g. all but one of several "
        "processes whose folders are merged later)",
    )
    parser.add_argument("--output", type=Path, default=Path("runs/quality"))
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="combine the output folders of earlier runs (e.g. one per seed) "
        "into --output instead of training",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.output)
        return
    variants = list(ABLATION) if args.variants == "ablation" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    args.output.mkdir(parents=True, exist_ok=True)
    config = load_config(
        args.config, [*args.overrides] + ([f"data.path='{args.data}'"] if args.data else [])
    )
    device = torch.device(args.device)
    evaluator = Evaluator(config, device, args.curve_train, args.curve_test)
    started = time.perf_counter()
    runs = []
    for seed in args.seeds:
        for name in variants:
            runs.append(run_variant(name, seed, args, evaluator))
            (args.output / "runs.json").write_text(json.dumps(runs, indent=1))
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or 'cpu'}; device {args.device}; torch "
        f"{torch.__version__}",
        "command": " ".join(["python", "benchmarks/quality.py", *__import__("sys").argv[1:]]),
        "steps": args.steps,
        "batch_size": config.optim.batch_size,
        "config": args.config,
        "table": summarise(runs),
        "baselines": {} if args.skip_baselines else baselines(config, evaluator, args),
        "runs": runs,
        "minutes": (time.perf_counter() - started) / 60,
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_curves(runs, args.output / "knn_curves.png")
    print(json.dumps({"table": summary["table"], "baselines": summary["baselines"]}, indent=1))


if __name__ == "__main__":
    main()
