"""``patchdino features``: frozen features of one data set split, saved to a file.

Also holds what the evaluation commands share on the command line: their common options and
the translation of those options into calls of :mod:`patchdino.eval.pipeline`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchdino.cli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from patchdino.data.datasets import CanvasDataset
    from patchdino.eval.pipeline import EvalSetup, Extraction

OUTPUT_SUFFIXES = (".pt", ".npz")


def add_network_arguments(
    parser: argparse.ArgumentParser, pixels: bool = True, required: bool = True
) -> None:
    """``--weights``, ``--config``, ``--checkpoint-key`` and ``--device``.

    Args:
        parser: the command's parser.
        pixels: whether ``--weights pixels`` (the raw-pixel baseline) makes sense.
        required: whether ``--weights`` is required by the parser (commands with a mode that
            needs no network check it themselves).
    """
    choices = "CKPT|random|pixels" if pixels else "CKPT|random"
    baseline = ", or 'pixels' (raw-pixel baseline)" if pixels else ""
    parser.add_argument(
        "--weights",
        required=required,
        metavar=choices,
        help="checkpoint.pt of 'patchdino pretrain' (or its run folder), a .safetensors "
        f"export, 'random' (the architecture of --config with random weights){baseline}",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config: the architecture for 'random' (defaults without it); with a "
        "checkpoint, its tensors must fit this architecture",
    )
    parser.add_argument(
        "--checkpoint-key",
        default="teacher",
        metavar="teacher|student",
        help="network of the checkpoint to evaluate (default: teacher)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_bad_image_argument(parser: argparse.ArgumentParser) -> None:
    """``--on-bad-image``: what the evaluation does with an unreadable image file."""
    parser.add_argument(
        "--on-bad-image",
        default="skip",
        metavar="skip|fail",
        help="an unreadable image file: leave it out (named on stderr, listed in the output "
        "as skipped) or stop with an error",
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the evaluation commands of labelled data sets."""
    parser.add_argument("--data", required=True, help="data set folder (any supported kind)")
    add_network_arguments(parser)
    add_bad_image_argument(parser)
    parser.add_argument(
        "--image-size",
        type=int,
        help="side of the square images the model sees (default: views.global_size of the "
        "config; the native size of in-memory data sets for pixels without --config)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--split", default="train", metavar="train|test|val", help="split to encode"
    )
    parser.add_argument(
        "--pool",
        default="cls",
        metavar="cls|mean|both",
        help="CLS token, mean patch token, or both concatenated",
    )
    parser.add_argument("--max-images", type=int, help="encode a seeded random subset")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="file: .pt (torch.save of a dict) or .npz, holding features, labels, names "
        "(image paths relative to root, or indices in the split), indices (in the split), "
        "classes, skipped (unreadable files left out), root and split",
    )


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn the evaluation pipeline's input errors into :class:`UsageError`."""
    from patchdino.eval.pipeline import EvalSetupError

    try:
        yield
    except EvalSetupError as err:
        raise UsageError(str(err)) from err


def resolve_device(name: str) -> torch.device:
    """``--device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) as a device that exists here."""
    from patchdino.errors import InputError
    from patchdino.train.distributed import resolve_device as resolve

    try:
        return resolve(name)
    except InputError as err:
        # The library's messages about the device start with "device": name the option.
        message = str(err)
        raise UsageError(f"--{message}" if message.startswith("device") else message) from err


def check_positive(**values: int | None) -> None:
    """Raise a UsageError for any given option that is below 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_pool(pool: str) -> None:
    """Raise a UsageError unless ``--pool`` names a token pooling."""
    from patchdino.eval.options import POOLS

    if pool not in POOLS:
        raise UsageError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")


def prepare(args: argparse.Namespace, kind: str | None = None) -> EvalSetup:
    """:func:`patchdino.eval.pipeline.prepare` from the common options.

    Args:
        args: the parsed options (``--data``, ``--weights``, ``--config``,
            ``--checkpoint-key``, ``--image-size``, ``--batch-size``, ``--num-workers``,
            ``--device``, ``--on-bad-image`` where the command has it).
        kind: the data's kind when the command knows it; detected from ``--data`` when None.
    """
    from patchdino.eval.pipeline import prepare as prepare_setup

    check_positive(batch_size=args.batch_size, image_size=args.image_size)
    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    device = resolve_device(args.device)
    with usage_errors():
        return prepare_setup(
            args.data,
            args.weights,
            device,
            config=args.config,
            checkpoint_key=args.checkpoint_key,
            image_size=args.image_size,
            kind=kind,
            on_bad_image=getattr(args, "on_bad_image", "skip"),
        )


def extraction(args: argparse.Namespace) -> Extraction:
    """Batch size, workers and progress bars of the common options."""
    from patchdino.eval.pipeline import Extraction

    return Extraction(args.batch_size, args.num_workers, not args.no_progress)


def feature_record(
    dataset: CanvasDataset,
    features: torch.Tensor,
    labels: torch.Tensor,
    limit: int | None,
    split: str,
) -> dict[str, Any]:
    """What ``features`` saves: the features and what joins each row back to its image.

    Args:
        dataset: the encoded split.
        features: ``(N, D)`` features of the items ``indices`` (all of them without a limit).
        labels: ``(N,)`` labels (-1 when unlabelled).
        limit: ``--max-images``: the seeded subset of
            :func:`patchdino.eval.eval_data.subset_indices`, as encoded.
        split: the split's name.

    Returns:
        ``features``, ``labels``, ``indices`` (``(N,)`` long, each row's item in the split),
        ``names`` (each row's image path relative to ``root``, or its index in the split for
        data sets held in memory; :meth:`~patchdino.data.datasets.CanvasDataset.item_names`),
        ``classes`` (names by label; empty when unlabelled), ``skipped`` (the names of the
        unreadable files left out of the split), ``root`` (the split's folder)
        and ``split``.
    """
    import torch

    from patchdino.eval.eval_data import left_out_images, subset_indices

    chosen = subset_indices(len(dataset), limit)
    indices = torch.arange(len(dataset)) if chosen is None else chosen
    names = dataset.item_names()
    root = getattr(dataset, "root", None)
    return {
        "features": features,
        "labels": labels,
        "indices": indices,
        "names": [names[int(i)] for i in indices],
        "classes": list(dataset.classes or []),
        "skipped": left_out_images(dataset),
        "root": "" if root is None else str(root),
        "split": split,
    }


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from patchdino.cli.outputs import check_output

    output: Path = args.output
    check_output(output, OUTPUT_SUFFIXES)
    check_positive(max_images=args.max_images)
    check_pool(args.pool)
    started = time.perf_counter()
    from patchdino.eval.pipeline import feature_model, open_split, split_features

    setup = prepare(args)
    with usage_errors():
        dataset = open_split(setup, args.split)
        model = None if setup.backbone is None else feature_model(setup, args.pool)
        features, labels, _ = split_features(
            setup,
            dataset,
            model,
            extraction(args),
            limit=args.max_images,
            desc=f"features {args.split}",
        )
    record = feature_record(dataset, features, labels, args.max_images, args.split)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".pt":
        torch.save(record, output)
    else:
        # text as unicode arrays: np.load reads every entry without allow_pickle
        arrays: dict[str, Any] = {
            "features": record["features"].numpy(),
            "labels": record["labels"].numpy(),
            "indices": record["indices"].numpy(),
            "names": np.array(record["names"], dtype=str),
            "classes": np.array(record["classes"], dtype=str),
            "skipped": np.array(record["skipped"], dtype=str),
            "root": np.array(record["root"]),
            "split": np.array(record["split"]),
        }
        np.savez(output, **arrays)
    seconds = time.perf_counter() - started
    print(
        f"{features.shape[0]} x {features.shape[1]} features of the {args.split} split "
        f"in {seconds:.1f} s -> {output}",
        file=sys.stdout,
    )
    return 0
