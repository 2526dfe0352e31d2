"""``patchdino linear``: linear probe on frozen features (DINO's linear evaluation).

Features (the CLS tokens of the last blocks, optionally with the mean patch token) are
computed once for both splits, then a linear classifier is trained on the train split and
scored on the test (or val) split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchdino.cli.common_options import (
    add_common_arguments,
    add_output_argument,
    add_subset_arguments,
    check_positive,
)
from patchdino.cli.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--n-last-blocks", type=int, default=4, help="blocks whose CLS tokens are concatenated"
    )
    parser.add_argument(
        "--avgpool", action="store_true", help="append the last block's mean patch token"
    )
    parser.add_argument("--epochs", type=int, default=100, help="probe training epochs")
    parser.add_argument(
        "--lr", type=float, default=0.001, help="base learning rate (x probe batch / 256)"
    )
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        help="candidate base rates, chosen on 10%% of the train split held out",
    )
    parser.add_argument("--probe-batch-size", type=int, default=1024, help="SGD batch size")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="weight decay of the probe")
    parser.add_argument(
        "--normalize",
        default="standardize",
        metavar="standardize|none",
        help="per-dimension feature standardisation (none: DINO's exact recipe)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe training")
    add_subset_arguments(parser)
    add_output_argument(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from patchdino.cli.common_options import extraction, prepare, usage_errors
    from patchdino.cli.outputs import check_output, write_json
    from patchdino.eval.classification.linear import (
        NORMALIZATIONS,
        MultiBlockFeatures,
        train_linear_probe,
    )
    from patchdino.eval.common.pipeline import labelled_features

    check_output(args.output, ".json")
    check_positive(
        epochs=args.epochs,
        n_last_blocks=args.n_last_blocks,
        probe_batch_size=args.probe_batch_size,
        max_train=args.max_train,
        max_test=args.max_test,
    )
    if args.normalize not in NORMALIZATIONS:
        raise UsageError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}")
    if args.lr <= 0 or (args.lrs is not None and min(args.lrs) <= 0):
        raise UsageError("learning rates must be > 0")
    started = time.perf_counter()
    setup = prepare(args)
    model = None
    if setup.backbone is not None:
        depth = len(setup.backbone.model.blocks)
        if args.n_last_blocks > depth:
            raise UsageError(
                f"--n-last-blocks {args.n_last_blocks} exceeds the backbone's {depth} blocks"
            )
        model = MultiBlockFeatures(setup.backbone.model, args.n_last_blocks, args.avgpool)
    with usage_errors():
        data = labelled_features(
            setup, model, "a linear probe", extraction(args), args.max_train, args.max_test
        )
    (train_feats, train_labels), (test_feats, test_labels) = data.train, data.test
    try:
        result = train_linear_probe(
            train_feats,
            train_labels,
            test_feats,
            test_labels,
            num_classes=len(data.classes),
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.probe_batch_size,
            weight_decay=args.weight_decay,
            normalize=args.normalize,
            seed=args.seed,
            device=setup.device,
            progress=not args.no_progress,
            lrs=args.lrs,
        )
    except ValueError as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    seconds = time.perf_counter() - started

    print(f"linear probe: top-1 {result.top1:.2f}  top-5 {result.top5:.2f}  (lr {result.lr:g})")
    record = {
        "top1": result.top1,
        "top5": result.top5,
        "lr": result.lr,
        "sweep": {f"{lr:g}": acc for lr, acc in result.sweep.items()},
        "weights": str(args.weights),
        "checkpoint_key": None if setup.backbone is None else args.checkpoint_key,
        "data": str(args.data),
        "kind": setup.kind,
        "n_last_blocks": None if setup.backbone is None else args.n_last_blocks,
        "avgpool": None if setup.backbone is None else args.avgpool,
        "epochs": args.epochs,
        "normalize": args.normalize,
        "image_size": setup.image_size,
        "num_train": int(train_feats.shape[0]),
        "skipped_images": data.skipped,
        "num_test": int(test_feats.shape[0]),
        "num_classes": len(data.classes),
        "feature_dim": int(train_feats.shape[1]),
        "seconds": round(seconds, 3),
        "history": result.history,
    }
    output: Path = args.output
    write_json(output, record)
    print(f"results: {output}")
    return 0
