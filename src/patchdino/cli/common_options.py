"""The options the commands share, declared once, and their translation into the library.

Every command that loads a network, reads a data set, encodes in batches or writes a result
declares those options with the functions here (the same names, defaults and help
everywhere); its own module adds only the options of its task. :func:`prepare` and
:func:`extraction` turn the parsed common options into the calls of
:mod:`patchdino.eval.common.pipeline`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from patchdino.cli.errors import UsageError

if TYPE_CHECKING:
    import torch

    from patchdino.eval.common.pipeline import EvalSetup, Extraction

DEVICE_HELP = "auto, cpu, cuda or cuda:N"
"""What ``--device`` takes."""


def add_data_argument(
    parser: argparse.ArgumentParser,
    help: str = "data set folder (any supported kind)",
    required: bool = True,
    path: bool = False,
) -> None:
    """``--data``: the folder the command reads (``path``: parsed as a :class:`Path`)."""
    parser.add_argument("--data", required=required, type=Path if path else str, help=help)


def add_device_argument(parser: argparse.ArgumentParser, help: str = DEVICE_HELP) -> None:
    """``--device`` (default ``auto``: a GPU when there is one)."""
    parser.add_argument("--device", default="auto", help=help)


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
    choices = "WEIGHTS|random|pixels" if pixels else "WEIGHTS|random"
    baseline = ", or 'pixels' (raw-pixel baseline)" if pixels else ""
    parser.add_argument(
        "--weights",
        required=required,
        metavar=choices,
        help="checkpoint.pt of 'patchdino pretrain' (or its run folder), a .safetensors "
        "export or its model folder (export --format hf), published weights (timm:NAME for "
        "timm's, timm:NAME@FILE for DINO's, DINOv2's or timm's files, e.g. "
        "timm:vit_small_patch14_reg4_dinov2@dinov2_vits14_reg4_pretrain.pth; a timm model "
        "folder; DINO's training checkpoint), 'random' (the architecture of --config with "
        f"random weights){baseline}",
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
    add_device_argument(parser)


def add_bad_image_argument(parser: argparse.ArgumentParser) -> None:
    """``--on-bad-image``: what the evaluation does with an unreadable image file."""
    parser.add_argument(
        "--on-bad-image",
        default="skip",
        metavar="skip|fail",
        help="an unreadable image file: leave it out (named on stderr, listed in the output "
        "as skipped) or stop with an error",
    )


def add_image_size_argument(
    parser: argparse.ArgumentParser,
    help: str = "side of the square images the model sees (default: views.global_size)",
) -> None:
    """``--image-size``: the input side of the network (each command says how it is used)."""
    parser.add_argument("--image-size", type=int, help=help)


def add_batch_arguments(
    parser: argparse.ArgumentParser,
    default: int = 256,
    help: str = "images per forward pass",
    workers: bool = True,
) -> None:
    """``--batch-size``, ``--num-workers`` (with ``workers``) and ``--no-progress``."""
    parser.add_argument("--batch-size", type=int, default=default, help=help)
    if workers:
        parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_output_argument(
    parser: argparse.ArgumentParser,
    help: str = "JSON file of the results",
    required: bool = True,
    default: Path | None = None,
) -> None:
    """``--output``: the file or folder the command writes (checked before any work by
    :mod:`patchdino.cli.outputs`)."""
    parser.add_argument(
        "--output", type=Path, required=required and default is None, default=default, help=help
    )


def add_subset_arguments(
    parser: argparse.ArgumentParser,
    train: str = "use a seeded random subset of the train split",
    test: str = "use a seeded random subset of the test split",
) -> None:
    """``--max-train`` and ``--max-test``: seeded subsets of the two splits."""
    parser.add_argument("--max-train", type=int, help=train)
    parser.add_argument("--max-test", type=int, help=test)


def add_pool_argument(
    parser: argparse.ArgumentParser,
    help: str = "CLS token, mean patch token, or both concatenated",
) -> None:
    """``--pool``: the token pooling of each feature (checked by :func:`check_pool`)."""
    from patchdino.eval.common.options import POOLS

    parser.add_argument("--pool", default=POOLS[0], metavar="|".join(POOLS), help=help)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the evaluation commands of labelled data sets."""
    add_data_argument(parser)
    add_network_arguments(parser)
    add_bad_image_argument(parser)
    add_image_size_argument(
        parser,
        "side of the square images the model sees (default: views.global_size of the "
        "config; the native size of in-memory data sets for pixels without --config)",
    )
    add_batch_arguments(parser)


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn the evaluation pipeline's input errors into :class:`UsageError`."""
    from patchdino.eval.common.pipeline import EvalSetupError

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
    from patchdino.eval.common.options import POOLS

    if pool not in POOLS:
        raise UsageError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")


def prepare(args: argparse.Namespace, kind: str | None = None) -> EvalSetup:
    """:func:`patchdino.eval.common.pipeline.prepare` from the common options.

    Args:
        args: the parsed options (``--data``, ``--weights``, ``--config``,
            ``--checkpoint-key``, ``--image-size``, ``--batch-size``, ``--num-workers``,
            ``--device``, ``--on-bad-image`` where the command has it).
        kind: the data's kind when the command knows it; detected from ``--data`` when None.
    """
    from patchdino.eval.common.pipeline import prepare as prepare_setup

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
    from patchdino.eval.common.pipeline import Extraction

    return Extraction(args.batch_size, args.num_workers, not args.no_progress)
