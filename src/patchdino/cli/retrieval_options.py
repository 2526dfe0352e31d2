"""Options shared by the ``copydetect`` and ``retrieve`` commands.

Both commands have a mode that needs no network (making queries, converting a ground truth),
so their model options are optional on the parser and required by :func:`require`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from patchdino.cli.common_options import (
    add_bad_image_argument,
    add_batch_arguments,
    add_image_size_argument,
    add_network_arguments,
    add_output_argument,
)
from patchdino.cli.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from patchdino.eval.common.pipeline import EvalSetup


def add_model_options(
    parser: argparse.ArgumentParser, output_help: str = "JSON file of the results"
) -> None:
    """Weights, architecture, image size, extraction, the descriptor and ``--output``."""
    from patchdino.eval.retrieval.options import DESCRIPTORS, GEM_POWER

    add_network_arguments(parser, required=False)
    add_bad_image_argument(parser)
    add_image_size_argument(parser)
    parser.add_argument(
        "--descriptor",
        default="both",
        metavar="|".join(DESCRIPTORS),
        help="CLS token, GeM-pooled patch tokens, or both concatenated (default)",
    )
    parser.add_argument(
        "--gem-power", type=float, default=GEM_POWER, help="exponent of the GeM pooling"
    )
    add_output_argument(parser, output_help, required=False)
    add_batch_arguments(parser)


def require(args: argparse.Namespace, mode: str, *options: str) -> None:
    """Raise a UsageError naming the first of ``options`` (``"--weights"``) not given."""
    for option in options:
        if getattr(args, option.lstrip("-").replace("-", "_")) is None:
            raise UsageError(f"{mode} needs {option}")


def check_descriptor(args: argparse.Namespace) -> None:
    """Refuse an unknown ``--descriptor`` or a GeM power that is not positive."""
    from patchdino.eval.retrieval.options import DESCRIPTORS

    if args.descriptor not in DESCRIPTORS:
        raise UsageError(f"--descriptor must be one of {', '.join(DESCRIPTORS)}")
    if args.gem_power <= 0:
        raise UsageError(f"--gem-power must be > 0, got {args.gem_power}")


def descriptor(setup: EvalSetup, args: argparse.Namespace) -> nn.Module | None:
    """The descriptor network of the options (None for pixels)."""
    from patchdino.cli.common_options import usage_errors
    from patchdino.eval.retrieval.descriptors import descriptor_model

    if setup.backbone is None:
        return None
    with usage_errors():
        return descriptor_model(setup, args.descriptor, args.gem_power)


def record_of(setup: EvalSetup, args: argparse.Namespace) -> dict[str, object]:
    """What every result file says about the features."""
    pixels = setup.backbone is None
    return {
        "weights": str(args.weights),
        "checkpoint_key": None if pixels else args.checkpoint_key,
        "descriptor": "pixels" if pixels else args.descriptor,
        "gem_power": None if pixels or args.descriptor == "cls" else args.gem_power,
        "image_size": setup.image_size,
    }
