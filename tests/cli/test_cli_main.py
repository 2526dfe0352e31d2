"""`patchdino` dispatcher: one-line errors or tracebacks, help texts, overrides anywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import patchdino.train.trainer as trainer_module
from patchdino.cli.main import COMMANDS, build_parser, main, parse_arguments
from patchdino.errors import InputError


def _trainer_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(trainer_module, "Trainer", fail)


def test_input_errors_become_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _trainer_raising(monkeypatch, InputError("data folder /nowhere does not exist"))
    assert main(["pretrain", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == "patchdino pretrain: error: data folder /nowhere does not exist\n"


def test_other_value_errors_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trainer_raising(monkeypatch, ValueError("shapes (3, 4) and (5, 6) do not match"))
    with pytest.raises(ValueError, match="do not match"):
        main(["pretrain", "--output", str(tmp_path / "run")])


def test_debug_shows_the_traceback_of_input_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trainer_raising(monkeypatch, InputError("data folder /nowhere does not exist"))
    with pytest.raises(InputError, match="does not exist"):
        main(["--debug", "pretrain", "--output", str(tmp_path / "run")])


def test_config_errors_are_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--output", str(tmp_path / "run"), "optim.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchdino pretrain: error: invalid configuration") and "optim.lr" in err


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_a_help_text_and_its_default(command: str) -> None:
    parser = subcommand_parsers()[command]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
        default = action.default
        if default is None or default is False or default == []:
            continue
        stated = str(default) in text or "default" in action.help
        assert stated, f"{command} {action.option_strings}: default {default!r} not shown"


def test_help_shows_defaults_but_not_empty_ones() -> None:
    text = subcommand_parsers()["match"].format_help()
    assert "(default: 224)" in text and "(default: grid)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_overrides_are_accepted_anywhere_among_the_options() -> None:
    argv = ["pretrain", "--output", "r", "run.save_every=100", "--no-progress", "optim.epochs=3"]
    args = parse_arguments(build_parser(), argv)
    assert args.no_progress and args.overrides == ["run.save_every=100", "optim.epochs=3"]
    argv = ["bench", "a.b=1", "--steps", "2", "c.d=2", "--seed", "1", "a.b=3"]
    assert parse_arguments(build_parser(), argv).overrides == ["a.b=1", "c.d=2", "a.b=3"]


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--output", "r", "optim.lr=1", "--no-progress", "optim"],
        ["pretrain", "--output", "r", "--no-progress", "--bogus=1"],
        ["knn", "--data", "d", "--weights", "pixels", "--output", "k.json", "optim.lr=1"],
    ],
)
def test_other_unknown_words_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_pretrain_with_overrides_after_flags_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []

    def record(config: object, output: Path, **_: object) -> None:
        seen.append(config)
        raise InputError("stop here")

    monkeypatch.setattr(trainer_module, "Trainer", record)
    argv = ["pretrain", "--output", str(tmp_path / "r"), "run.save_every=100", "--no-progress"]
    assert main([*argv, "optim.epochs=3"]) == 2
    (config,) = seen
    assert config.run.save_every == 100 and config.optim.epochs == 3  # type: ignore[attr-defined]


def test_help_of_every_command_imports_no_torch() -> None:
    """``--help`` builds every command's options without the heavy modules (the trackers'
    optional packages among them): it is instant."""
    script = (
        "import contextlib, io, sys\n"
        "from patchdino.cli.main import COMMANDS, main\n"
        "for command in [None, *COMMANDS]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(['--help'] if command is None else [command, '--help'])\n"
        "heavy = ('torch', 'numpy', 'timm', 'wandb', 'mlflow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_an_unknown_option_shows_the_usage_of_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["knn", "--data", "d", "--weights", "random", "--output", "o.json", "--topk", "5"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("usage: patchdino knn ")
    assert "patchdino knn: error: unrecognized arguments: --topk 5" in err
