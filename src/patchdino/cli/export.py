"""``patchdino export``: one backbone of a pretraining checkpoint as a ``.safetensors``
file, or as a model folder in the layout of timm and the Hugging Face hub (``--format hf``)."""

from __future__ import annotations

import argparse

from patchdino.cli.common_options import add_output_argument
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output, check_output_folder

DTYPES = ("float32", "float16", "bfloat16")
FORMATS = ("safetensors", "hf")
"""``safetensors``: one file; ``hf``: a folder with ``model.safetensors``, ``config.json``
and a ``README.md`` model card, loaded by ``timm.create_model("local-dir:FOLDER",
pretrained=True)``."""


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
    parser.add_argument(
        "--format",
        default=FORMATS[0],
        metavar="|".join(FORMATS),
        help="safetensors: one .safetensors file; hf: a model folder (model.safetensors, "
        "config.json, README.md model card with the run's config and evaluation JSONs) that "
        "timm.create_model('local-dir:FOLDER', pretrained=True) and the Hugging Face hub read",
    )
    add_output_argument(parser, "a .safetensors file, or the model folder with --format hf")


def run(args: argparse.Namespace) -> int:
    import torch

    from patchdino.eval.common.backbone_loading import BackboneLoadError
    from patchdino.eval.common.export import export_backbone
    from patchdino.eval.common.hf_export import export_hf

    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.format == "hf":
        check_output_folder(args.output)
    else:
        check_output(args.output, ".safetensors")
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    write = export_hf if args.format == "hf" else export_backbone
    try:
        path = write(args.weights, args.output, args.checkpoint_key, getattr(torch, args.dtype))
    except BackboneLoadError as err:
        raise UsageError(str(err)) from err
    print(f"{args.checkpoint_key} backbone of {args.weights} -> {path}")
    return 0
