"""`patchdino` dispatcher: which errors become one-line messages and which keep a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import patchdino.train.trainer as trainer_module
from patchdino.cli.main import main
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
