"""``patchdino export``: one backbone of a pretraining checkpoint as a ``.safetensors`` file."""

from __future__ import annotations

import argparse

from patchdino.cli.common_options import add_output_argument
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output

DTYPES = ("float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", required=True, help="checkpoint.pt of 'patchdino pretrain' or its run folder"
    )
    parser.add_argument(
        "--checkpoint-key",
        default="teacher",
        metavar="teacher|student",
        help="network to export (default: teacher)",
    )
    parser.add_argument(
        "--dtype", default="float32", metavar="|".join(DTYPES), help="tensor type of the file"
    )
    add_output_argument(parser, "a .safetensors file")


def run(args: argparse.Namespace) -> int:
    import torch

    from patchdino.eval.common.backbone_loading import BackboneLoadError
    from patchdino.eval.common.export import export_backbone

    check_output(args.output, ".safetensors")
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    try:
        path = export_backbone(
            args.weights, args.output, args.checkpoint_key, getattr(torch, args.dtype)
        )
    except BackboneLoadError as err:
        raise UsageError(str(err)) from err
    print(f"{args.checkpoint_key} backbone of {args.weights} -> {path}")
    return 0
