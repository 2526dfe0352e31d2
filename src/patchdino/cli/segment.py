"""``patchdino segment``: linear semantic-segmentation probe on frozen patch tokens.

Reads Pascal VOC, ADE20K or the Fashion-MNIST segmentation task (from its IDX files), trains
the probe of :mod:`patchdino.eval.dense.segmentation` on the train split and writes mIoU, pixel
accuracy and per-class IoU of the validation split (Fashion-MNIST: the 10,000 test images).
"""

from __future__ import annotations

import argparse
import sys

from patchdino.cli.common_options import (
    add_bad_image_argument,
    add_batch_arguments,
    add_data_argument,
    add_image_size_argument,
    add_network_arguments,
    add_output_argument,
    add_subset_arguments,
)
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output, write_json

FASHION_TRAIN_IMAGES = 10_000
"""Default probe training subset of the Fashion-MNIST task (seeded, fixed)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from patchdino.eval.dense.options import SEGMENTATION_EVAL_MODES

    add_data_argument(parser, "Pascal VOC or ADE20K root, or a Fashion-MNIST IDX folder")
    add_network_arguments(parser, pixels=False)
    add_bad_image_argument(parser)
    add_output_argument(parser)
    parser.add_argument("--layers", type=int, default=1, help="last blocks concatenated")
    parser.add_argument("--epochs", type=int, default=10, help="probe training epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument(
        "--weight-decay", type=float, default=1e-4, help="AdamW weight decay of the probe"
    )
    add_batch_arguments(parser, 64, "images per step")
    add_image_size_argument(
        parser, "training crop and evaluation window side (default: views.global_size)"
    )
    parser.add_argument(
        "--eval-mode",
        default="slide",
        metavar="|".join(SEGMENTATION_EVAL_MODES),
        help="sliding windows on the shorter side resized to the image size, or the whole "
        "image resized",
    )
    add_subset_arguments(
        parser,
        f"train on a seeded subset (default: all; {FASHION_TRAIN_IMAGES:,} for Fashion-MNIST)",
        "evaluate a seeded subset",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe training")


def run(args: argparse.Namespace) -> int:
    import math
    import time

    from patchdino.cli.common_options import prepare
    from patchdino.eval.common.eval_data import Normalise
    from patchdino.eval.common.pipeline import RANDOM
    from patchdino.eval.dense.segmentation import (
        ProbeSettings,
        probe_problems,
        train_segmentation_probe,
    )
    from patchdino.eval.dense.segmentation_data import (
        left_out_pairs,
        open_segmentation,
        segmentation_layout,
    )

    check_output(args.output, ".json")
    given = {
        field: getattr(args, field)
        for field in (
            *("image_size", "layers", "epochs", "batch_size", "max_train", "max_test"),
            *("lr", "weight_decay", "eval_mode"),
        )
    }
    problems = probe_problems(given, lambda field: "--" + field.replace("_", "-"))
    if problems:
        raise UsageError(problems[0])
    if args.weights == "pixels":
        raise UsageError("segment needs a network: give a checkpoint, an export or 'random'")
    started = time.perf_counter()
    layout = segmentation_layout(args.data)  # its errors are input errors: one line, exit 2
    setup = prepare(args, kind="fashion_mnist" if layout == "fashion_mnist" else "imagefolder")
    if args.weights == RANDOM and args.config is None and layout != "fashion_mnist":
        print("note: random weights of the default architecture", file=sys.stderr)
    backbone = setup.backbone
    assert backbone is not None and setup.image_size is not None
    depth = len(backbone.model.blocks)
    if args.layers > depth:
        raise UsageError(f"--layers {args.layers} exceeds the backbone's {depth} blocks")
    max_train = args.max_train
    if max_train is None and layout == "fashion_mnist":
        max_train = FASHION_TRAIN_IMAGES
    settings = ProbeSettings(
        image_size=setup.image_size,
        layers=args.layers,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        eval_mode=args.eval_mode,
        max_train=max_train,
        max_test=args.max_test,
        seed=args.seed,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    policy = args.on_bad_image
    train_set = open_segmentation(args.data, "train", setup.channels, True, policy)
    test_set = open_segmentation(args.data, "val", setup.channels, True, policy)
    result = train_segmentation_probe(
        backbone, Normalise(setup.mean, setup.std), train_set, test_set, settings, setup.device
    )
    seconds = time.perf_counter() - started

    scores = result.scores
    print(f"mIoU {scores.miou:.2f}  pixel accuracy {scores.pixel_accuracy:.2f}")
    record = {
        "miou": scores.miou,
        "pixel_accuracy": scores.pixel_accuracy,
        "iou": {
            name: None if math.isnan(iou) else iou
            for name, iou in zip(train_set.classes, scores.iou)
        },
        "weights": str(args.weights),
        "checkpoint_key": args.checkpoint_key,
        "data": str(args.data),
        "layout": layout,
        "layers": args.layers,
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "image_size": setup.image_size,
        "eval_mode": args.eval_mode,
        "seed": args.seed,
        "num_train": result.num_train,
        "num_test": result.num_test,
        "skipped": {"train": left_out_pairs(train_set), "val": left_out_pairs(test_set)},
        "feature_dim": result.feature_dim,
        "history": result.history,
        "seconds": round(seconds, 3),
    }
    write_json(args.output, record)
    print(f"results: {args.output}")
    return 0
