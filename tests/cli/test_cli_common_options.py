"""The options commands share are declared once: the same help and default in every command,
and no command module writes them again."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from patchdino.cli.common_options import (
    add_batch_arguments,
    add_common_arguments,
    add_output_argument,
)
from patchdino.cli.main import COMMANDS, build_parser

CLI = Path(__file__).resolve().parents[2] / "src" / "patchdino" / "cli"

EVALUATION_COMMANDS = (
    "features", "knn", "linear", "segment", "propagate", "retrieve", "copydetect", "attention",
)  # fmt: skip
"""The commands that evaluate a network: they take their network options from one place."""

SHARED = (
    "--data", "--weights", "--config", "--checkpoint-key", "--device", "--image-size",
    "--batch-size", "--num-workers", "--no-progress", "--output", "--max-train", "--max-test",
    "--pool", "--on-bad-image",
)  # fmt: skip
"""The options of ``cli/common_options.py``."""

OWN_DECLARATIONS = {
    "pretrain": {"--config", "--data", "--output", "--batch-size", "--device", "--no-progress"},
    "export": {"--weights", "--checkpoint-key"},
    "demo": {"--data", "--config", "--no-progress"},
    "bench": {"--batch-size"},
    "match": {"--output", "--config", "--image-size"},
}
"""Shared option names that a command declares with a meaning of its own: pretrain's options
set config keys (default: the config's), export takes only checkpoints, demo runs a packaged
recipe, bench's batch is a training step's, match writes a folder of figures."""


def _parsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: a for a in parser._actions for option in a.option_strings}


@pytest.mark.parametrize(
    "option", ["--weights", "--config", "--checkpoint-key", "--device", "--on-bad-image"]
)
def test_a_network_option_reads_the_same_in_every_evaluation_command(option: str) -> None:
    """The same help and default everywhere; ``--weights`` in two forms, with and without
    the raw-pixel baseline (commands that need a network's tokens have none)."""
    parsers = _parsers()
    seen = {
        command: (action.help, action.default, action.metavar)
        for command in EVALUATION_COMMANDS
        if (action := _actions(parsers[command]).get(option)) is not None
    }
    forms = {
        metavar: {v for v in seen.values() if v[2] == metavar} for *_, metavar in seen.values()
    }
    assert len(seen) >= 3 and all(len(form) == 1 for form in forms.values()), seen
    assert len(forms) == (2 if option == "--weights" else 1), forms


def test_device_reads_the_same_wherever_it_defaults_to_auto() -> None:
    found = {
        command: action.help
        for command, parser in _parsers().items()
        if (action := _actions(parser).get("--device")) is not None and action.default == "auto"
    }
    assert set(found) >= {*EVALUATION_COMMANDS, "bench", "demo"}
    assert len(set(found.values())) == 1, found


def _declared_options(path: Path) -> set[str]:
    """Option names that a module passes to ``add_argument`` itself."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            names.update(
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            )
    return names


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_writes_a_shared_option_again(command: str) -> None:
    module = CLI / f"{command}.py"
    again = _declared_options(module) & set(SHARED)
    assert again <= OWN_DECLARATIONS.get(command, set()), f"{module.name}: {sorted(again)}"


def test_the_shared_declarations_parse_as_documented() -> None:
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    add_output_argument(parser)
    args = parser.parse_args(["--data", "d", "--weights", "random", "--output", "o.json"])
    assert (args.batch_size, args.num_workers, args.no_progress) == (256, 0, False)
    assert (args.device, args.checkpoint_key, args.on_bad_image) == ("auto", "teacher", "skip")
    assert args.output == Path("o.json") and args.image_size is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--weights", "random", "--output", "o.json"])  # --data required

    frames = argparse.ArgumentParser()
    add_batch_arguments(frames, 8, "frames encoded at once", workers=False)
    assert vars(frames.parse_args([])) == {"batch_size": 8, "no_progress": False}
    assert re.search(r"--batch-size BATCH_SIZE\s+frames encoded at once", frames.format_help())
