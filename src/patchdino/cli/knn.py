"""``patchdino knn``: DINO's weighted k-NN classification on frozen features.

The train split is the memory bank, the test (or val) split the queries; cosine similarity,
votes weighted by ``exp(s / T)``, top-1 and top-5 accuracy for each ``k``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patchdino.cli.common_options import (
    add_common_arguments,
    add_output_argument,
    add_pool_argument,
    add_subset_arguments,
    check_pool,
    check_positive,
)
from patchdino.cli.errors import UsageError
from patchdino.eval.classification.options import TOP5_CONVENTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[10, 20, 100, 200], help="numbers of neighbours"
    )
    parser.add_argument("--temperature", type=float, default=0.07, help="vote temperature T")
    parser.add_argument(
        "--top5",
        default=TOP5_CONVENTIONS[0],
        metavar="|".join(TOP5_CONVENTIONS),
        help="top-5 hit: the true class is among the 5 most voted and got a vote (voted), or "
        "among the first 5 of all classes sorted, voted or not (dino: DINO's knn_classifier; "
        "higher at small k)",
    )
    add_pool_argument(parser, "token pooling of the features")
    add_subset_arguments(
        parser,
        "use a seeded random subset of the memory",
        "use a seeded random subset of the queries",
    )
    add_output_argument(parser)


TOP5_NOTES = {
    "voted": "top-5 counts a class only if a neighbour voted for it (--top5 dino: DINO's count)",
    "dino": "top-5 as DINO's knn_classifier: the first 5 classes sorted, voted or not",
}
"""The line under the table that says how top-5 was counted."""


def format_table(top1: dict[int, float], top5: dict[int, float], convention: str) -> str:
    """Plain-text table of accuracies per ``k``, and how top-5 was counted."""
    lines = [f"{'k':>6}  {'top-1':>7}  {'top-5':>7}"]
    lines += [f"{k:>6}  {top1[k]:>7.2f}  {top5[k]:>7.2f}" for k in sorted(top1)]
    return "\n".join([*lines, TOP5_NOTES[convention]])


def run(args: argparse.Namespace) -> int:
    import time

    from patchdino.cli.common_options import extraction, prepare, usage_errors
    from patchdino.cli.outputs import check_output, write_json
    from patchdino.eval.classification.knn import knn_classify
    from patchdino.eval.common.pipeline import feature_model, labelled_features

    check_output(args.output, ".json")
    check_positive(max_train=args.max_train, max_test=args.max_test, ks=min(args.ks))
    check_pool(args.pool)
    if args.temperature <= 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.top5 not in TOP5_CONVENTIONS:
        raise UsageError(f"--top5 must be one of {', '.join(TOP5_CONVENTIONS)}, got {args.top5!r}")
    started = time.perf_counter()
    setup = prepare(args)
    with usage_errors():
        model = None if setup.backbone is None else feature_model(setup, args.pool)
        data = labelled_features(
            setup, model, "k-NN", extraction(args), args.max_train, args.max_test
        )
    (train_feats, train_labels), (test_feats, test_labels) = data.train, data.test
    num_train = int(train_feats.shape[0])
    ks = sorted(set(args.ks))
    kept = [k for k in ks if k <= num_train]
    dropped = [k for k in ks if k > num_train]
    if dropped:
        print(
            f"note: dropping k = {', '.join(map(str, dropped))}: larger than the "
            f"{num_train} train images",
            file=sys.stderr,
        )
    if not kept:
        raise UsageError(f"every k is larger than the {num_train} train images")
    try:
        result = knn_classify(
            train_feats,
            train_labels,
            test_feats,
            test_labels,
            ks=kept,
            temperature=args.temperature,
            num_classes=len(data.classes),
            device=setup.device,
            top5=args.top5,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err
    seconds = time.perf_counter() - started

    print(format_table(result.top1, result.top5, args.top5))
    record = {
        "k": {str(k): result.top1[k] for k in kept},
        "top5": {str(k): result.top5[k] for k in kept},
        "top5_convention": args.top5,
        "weights": str(args.weights),
        "checkpoint_key": None if setup.backbone is None else args.checkpoint_key,
        "data": str(args.data),
        "kind": setup.kind,
        "pool": None if setup.backbone is None else args.pool,
        "temperature": args.temperature,
        "image_size": setup.image_size,
        "num_train": num_train,
        "skipped_images": data.skipped,
        "num_test": int(test_feats.shape[0]),
        "num_classes": len(data.classes),
        "feature_dim": int(train_feats.shape[1]),
        "seconds": round(seconds, 3),
    }
    output: Path = args.output
    write_json(output, record)
    print(f"results: {output}")
    return 0
