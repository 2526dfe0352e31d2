"""``patchdino demo``: the main job on the embedded default, start to finish on a CPU.

Finds Fashion-MNIST (``--data``, else the folder of Debian's package, which ``make
fashion-mnist`` installs), pretrains the packaged ``fashion_mnist_tiny`` configuration,
evaluates the teacher, a random initialisation and raw pixels by k-NN on the 10,000 test
images, and writes ``report.md`` with the table, the loss curve, a match figure and an
attention figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from patchdino.cli.common_options import add_device_argument, add_output_argument
from patchdino.cli.errors import UsageError

DEMO_CONFIG = "fashion_mnist_tiny"
KS = (10, 20, 100, 200)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_argument(parser, "demo folder", default=Path("runs/demo"))
    parser.add_argument(
        "--data",
        type=Path,
        help="Fashion-MNIST IDX folder (default: /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--config", default=DEMO_CONFIG, help="config file or packaged name")
    parser.add_argument("--max-steps", type=int, help="pretraining steps (default: config)")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides for the pretraining run"
    )


def _call(argv: list[str]) -> None:
    from patchdino.cli.main import main

    code = main(argv)
    if code != 0:
        raise UsageError(f"'patchdino {' '.join(argv[:1])}' failed with exit code {code}")


def _match_figure(data: Path, config: Any, out: Path) -> Path:
    """Views of one test image with the run's view settings, and their matches."""
    from PIL import Image

    from patchdino.data.datasets import build_dataset

    test = build_dataset(data, "fashion_mnist", "test", canvas=None)
    image = test[0][0][0].numpy()
    Image.fromarray(image).save(out / "sample.png")
    v, m = config.views, config.model
    _call(
        [
            "match",
            str(out / "sample.png"),
            "--output",
            str(out / "match"),
            "--seed",
            "0",
            "--patch-size",
            str(m.patch_size),
            "--global-size",
            str(v.global_size),
            "--local-size",
            str(v.local_size),
            "--locals",
            str(v.num_local),
            "--mode",
            config.loss.terms.patch.matching,
        ]
    )
    return out / "match" / "matches.png"


def _attention_figure(data: Path, checkpoint: Path, out: Path) -> Path:
    import torch
    import torch.nn.functional as F

    from patchdino.data.datasets import build_dataset, normalisation
    from patchdino.eval.common.backbone_loading import load_backbone
    from patchdino.viz.attention import attention_maps, plot_attention

    loaded = load_backbone(checkpoint, "teacher")
    backbone = loaded.backbone.eval()
    test = build_dataset(data, "fashion_mnist", "test", canvas=None)
    present = [c for c in range(int(test.labels.max()) + 1) if bool((test.labels == c).any())]
    picks = [int(torch.nonzero(test.labels == c)[0]) for c in present[:8]]
    images = torch.stack([test[i][0] for i in picks]).float() / 255  # (8, 1, 28, 28)
    size = loaded.config.views.global_size
    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    mean, std = normalisation(loaded.config, "fashion_mnist", images.shape[1])
    normalised = (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.inference_mode():
        maps = attention_maps(backbone, normalised)
    titles = [test.classes[test[i][2]] for i in picks] if test.classes else None
    return plot_attention(images, maps, out / "attention.png", titles=titles)


def _report(out: Path, results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> Path:
    rows = [
        ("pretrained teacher (patchdino), CLS", results["teacher"]),
        ("random initialisation, CLS", results["random"]),
        ("pretrained teacher, mean patch token", results["teacher_mean"]),
        ("random initialisation, mean patch token", results["random_mean"]),
        ("raw pixels", results["pixels"]),
    ]
    ks = [k for k in map(str, KS) if all(k in r["k"] for _, r in rows)]
    table = ["| features | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name, record in rows:
        table.append(f"| {name} | " + " | ".join(f"{record['k'][k]:.2f}" for k in ks) + " |")
    gain = results["teacher"]["k"]["20"] - results["random"]["k"]["20"]
    gain_mean = results["teacher_mean"]["k"]["20"] - results["random_mean"]["k"]["20"]
    text = f"""# patchdino demo report

Pretraining: `{summary["config"]}` on Fashion-MNIST ({summary["train_images"]} training
images), {summary["steps"]} steps of batch {summary["batch_size"]} on {summary["device"]} in
{summary["pretrain_minutes"]:.1f} min; final loss {summary["final_loss"]:.4f}
(CLS {summary["final_cls"]:.4f}, patch {summary["final_patch"]:.4f}).

## k-NN top-1 (%) on the 10,000 test images

DINO's protocol: cosine similarity of L2-normalised CLS features, weighted vote exp(s/0.07),
the 60,000 training images as memory. The "mean patch token" rows pool the patch tokens
instead of taking CLS: the patch loss trains those tokens directly.

{chr(10).join(table)}

The pretrained teacher is {gain:+.2f} points above random initialisation at k = 20 (CLS) and
{gain_mean:+.2f} points (mean patch token).

## Training loss

![loss](pretrain/loss.png)

## Matched patches

Views of one test image with this run's view settings; equal colours mark the same source
location ({summary["matching"]} matching).

![matches](match/matches.png)

## Attention of the CLS token (last block)

![attention](attention.png)

Run folder: `pretrain/` (config.yaml, metrics.jsonl, checkpoint.pt, tensorboard/).
Total time {summary["total_minutes"]:.1f} min.
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def run(args: argparse.Namespace) -> int:
    from patchdino.checkpoint import CHECKPOINT_NAME
    from patchdino.cli.outputs import check_output_folder
    from patchdino.config import load_config, resolve_config_path
    from patchdino.data.datasets import find_fashion_mnist
    from patchdino.train.distributed import resolve_device
    from patchdino.train.metrics import read_metrics

    started = time.perf_counter()
    out: Path = args.output
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = args.data or find_fashion_mnist()
    except ValueError as err:
        raise UsageError(str(err)) from err
    config_path = resolve_config_path(args.config)
    overrides = [f"data.path='{data}'", *args.overrides]
    if args.max_steps is not None:
        overrides.append(f"run.max_steps={args.max_steps}")
    config = load_config(config_path, overrides)
    quiet = ["--no-progress"] if args.no_progress else []
    print(f"[1/4] pretraining {config_path.name} on {data}")
    pretrain_started = time.perf_counter()
    pretrain_dir = out / "pretrain"
    _call(
        [
            "pretrain",
            "--config",
            str(config_path),
            "--output",
            str(pretrain_dir),
            "--device",
            args.device,
            *quiet,
            *overrides,
        ]
    )
    pretrain_minutes = (time.perf_counter() - pretrain_started) / 60
    checkpoint = pretrain_dir / CHECKPOINT_NAME
    results: dict[str, dict[str, Any]] = {}
    evaluations = (
        ("teacher", str(checkpoint), "cls"),
        ("teacher_mean", str(checkpoint), "mean"),
        ("random", "random", "cls"),
        ("random_mean", "random", "mean"),
        ("pixels", "pixels", None),
    )
    print("[2/4] k-NN of the teacher and of random weights (CLS and mean patch token)")
    for name, weights, pool in evaluations:
        if pool is None:
            print("[3/4] k-NN of raw pixels")
        target = out / f"knn_{name}.json"
        architecture = ["--config", str(config_path)] if weights == "random" else []
        _call(
            [
                "knn",
                "--data",
                str(data),
                "--weights",
                weights,
                *architecture,
                *(["--pool", pool] if pool else []),
                "--device",
                args.device,
                "--output",
                str(target),
                "--ks",
                *map(str, KS),
                *quiet,
            ]
        )
        results[name] = json.loads(target.read_text())
    print("[4/4] figures")
    _match_figure(Path(data), config, out)
    _attention_figure(Path(data), checkpoint, out)
    records = read_metrics(pretrain_dir / "metrics.jsonl")
    last = records[-1]
    summary = {
        "config": config_path.name,
        "train_images": results["teacher"]["num_train"],
        "steps": last["step"],
        "batch_size": config.optim.batch_size,
        "device": str(resolve_device(args.device)),
        "pretrain_minutes": pretrain_minutes,
        "final_loss": last["loss"],
        "final_cls": last["loss_cls"],
        "final_patch": last["loss_patch"],
        "matching": config.loss.terms.patch.matching,
        "total_minutes": (time.perf_counter() - started) / 60,
    }
    report = _report(out, results, summary)
    print(f"report: {report}")
    return 0
