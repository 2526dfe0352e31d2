"""``patchdino features``: frozen features of one data set split, saved to a file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchdino.cli.common_options import (
    add_common_arguments,
    add_output_argument,
    add_pool_argument,
    check_pool,
    check_positive,
    extraction,
    prepare,
    usage_errors,
)

if TYPE_CHECKING:
    import torch

    from patchdino.data.datasets import CanvasDataset

OUTPUT_SUFFIXES = (".pt", ".npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--split", default="train", metavar="train|test|val", help="split to encode"
    )
    add_pool_argument(parser)
    parser.add_argument("--max-images", type=int, help="encode a seeded random subset")
    add_output_argument(
        parser,
        "file: .pt (torch.save of a dict) or .npz, holding features, labels, names "
        "(image paths relative to root, or indices in the split), indices (in the split), "
        "classes, skipped (unreadable files left out), root and split",
    )


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
            :func:`patchdino.eval.common.eval_data.subset_indices`, as encoded.
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

    from patchdino.eval.common.eval_data import left_out_images, subset_indices

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
    from patchdino.eval.common.pipeline import feature_model, open_split, split_features

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
