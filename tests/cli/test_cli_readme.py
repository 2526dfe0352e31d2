"""Every ``patchdino`` command line in README.md is accepted by the current parser."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from patchdino.cli.main import build_parser, parse_arguments

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    """Arguments after ``patchdino`` of each command line in the README's bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "patchdino" in words and words[0] in ("patchdino", "python", "torchrun"):
                commands.append(words[words.index("patchdino") + 1 :])
    return commands


def test_the_readme_has_commands() -> None:
    names = {argv[0] for argv in readme_commands()}
    assert {"pretrain", "match", "features", "export", "knn"} <= names


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_readme_command_parses(argv: list[str]) -> None:
    parse_arguments(build_parser(), argv)
