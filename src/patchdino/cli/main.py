"""``patchdino`` entry point: dispatches to one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Problems
the user can fix print one message on stderr and exit with code 2, without a traceback: the
command line's :class:`~patchdino.cli.errors.UsageError`, the library's
:class:`~patchdino.errors.InputError` (:class:`~patchdino.config.ConfigError` among them) and a
refused or unreadable checkpoint (:class:`~patchdino.checkpoint.CheckpointError`). Any
other exception is a bug and keeps its traceback; ``--debug`` shows the traceback of the
one-line errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from patchdino import __version__

COMMANDS: dict[str, str] = {
    "pretrain": "Local-global self-distillation pretraining.",
    "match": "Sample views of one image and draw their matched patches.",
    "features": "Frozen features of a data set split, saved to .pt or .npz.",
    "knn": "Weighted k-NN classification on frozen features (DINO's protocol).",
    "linear": "Linear probe on frozen features.",
    "segment": "Linear semantic-segmentation probe on frozen patch tokens (mIoU).",
    "propagate": "Video object segmentation by label propagation (DINO's protocol).",
    "attention": "Per-head CLS attention maps of the last block for your own images.",
    "copydetect": "Copy detection on frozen descriptors; --make-queries writes strong copies.",
    "retrieve": "Image retrieval: revisited Oxford/Paris, or by labels on any labelled data set.",
    "export": "Export a checkpoint's backbone as .safetensors.",
    "demo": "Pretrain on Fashion-MNIST, evaluate by k-NN and write a report.",
    "bench": "Training-step throughput: model-only, input pipeline and end to end.",
    "config": "Every config key with its type, default and doc; a resolved config.",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default after its help text.

    Left out where there is nothing to show (no default, a flag that is off, an empty list)
    and where the help text already states the default in its own words.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == ()
        if nothing or default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchdino",
        description="Local-global self-supervised pretraining of Vision Transformers.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"patchdino {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of one-line errors too"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"patchdino.cli.{name}")
        command = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(command_parser=command)  # errors then show this command's usage
    return parser


def is_override(text: str) -> bool:
    """Whether a command-line word is a ``section.key=value`` config override."""
    key, sep, _ = text.partition("=")
    return bool(sep) and not key.startswith("-") and "." in key


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``, accepting ``key=value`` overrides anywhere among the options.

    argparse hands a positional list to the first run of positional words only; the
    overrides found after a later option are appended, in order, to the command's
    ``overrides``. Any other unknown word is an error, as with ``parse_args``.
    """
    args, extras = parser.parse_known_args(argv)
    command_parser = vars(args).pop("command_parser", parser)
    overrides = getattr(args, "overrides", None)
    unknown = [word for word in extras if overrides is None or not is_override(word)]
    if unknown:
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extras:
        args.overrides = [*(overrides or []), *extras]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    from patchdino.cli.errors import UsageError
    from patchdino.errors import CheckpointError, InputError

    args = parse_arguments(build_parser(), argv)
    module = importlib.import_module(f"patchdino.cli.{args.command}")
    try:
        return int(module.run(args))
    except (UsageError, InputError, CheckpointError) as err:
        if args.debug:
            raise
        print(f"patchdino {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"patchdino {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
