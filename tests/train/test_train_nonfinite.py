"""Non-finite losses and gradients: stop with the last good checkpoint intact, or skip."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import (
    cli_args,
    losses,
    run_cli,
    single_thread,
    steps,
)

import patchdino.train.step as step_module
import patchdino.train.trainer as trainer_module
from patchdino.checkpoint import load_checkpoint
from patchdino.losses import LocalGlobalLoss

pytestmark = pytest.mark.usefixtures("no_loss_plots")


def nan_loss_at(monkeypatch: pytest.MonkeyPatch, bad_step: int, poison_centre: bool) -> None:
    """Make the loss NaN at optimiser step ``bad_step`` (1-based, one forward pass per step).

    With ``poison_centre`` that forward pass sees NaN teacher tokens, so that the centre's
    statistics of the step are NaN too.
    """
    original = LocalGlobalLoss.forward
    calls = [0]

    def forward(self: LocalGlobalLoss, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == bad_step and poison_centre:
            student, teacher, *rest = args
            return original(self, student, [t * math.nan for t in teacher], *rest, **kwargs)
        out = original(self, *args, **kwargs)
        if calls[0] != bad_step:
            return out
        return dataclasses.replace(out, loss=out.loss * math.nan)

    monkeypatch.setattr(LocalGlobalLoss, "forward", forward)


def record_saves(monkeypatch: pytest.MonkeyPatch) -> dict[int, str]:
    """Step -> SHA-256 of the checkpoint file right after each save."""
    saves: dict[int, str] = {}
    original = trainer_module.save_checkpoint

    def save(state: dict[str, Any], path: Path, **options: Any) -> None:
        original(state, path, **options)
        saves[state["step"]] = hashlib.sha256(Path(path).read_bytes()).hexdigest()

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    return saves


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    nan_loss_at(monkeypatch, 3, poison_centre=False)
    saves = record_saves(monkeypatch)
    with single_thread():
        assert run_cli(cli_args(data, out, 6, "--save-every", "2")) == 1
    err = capsys.readouterr().err
    assert "the loss is nan at step 3" in err
    assert "optim.lr" in err and "run.on_nonfinite=skip" in err
    assert "still holds the last good state" in err and "Traceback" not in err
    assert list(saves) == [2]
    checkpoint = out / "checkpoint.pt"
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == saves[2]
    assert load_checkpoint(checkpoint)["step"] == 2
    assert steps(out) == [1, 2]


def test_nonfinite_gradient_norm_also_stops(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = step_module.clip_gradients
    calls = [0]

    def clip(parameters: Any, max_norm: float) -> float:
        calls[0] += 1
        norm = original(parameters, max_norm)
        return math.inf if calls[0] == 1 else norm

    monkeypatch.setattr(step_module, "clip_gradients", clip)
    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(data, out, 2)) == 1
    err = capsys.readouterr().err
    assert "the gradient norm is inf at step 1" in err and "no checkpoint was saved yet" in err
    assert not (out / "checkpoint.pt").exists()


def test_skip_leaves_no_trace_of_the_bad_step_and_counts_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    nan_loss_at(monkeypatch, 3, poison_centre=True)
    with single_thread():
        assert run_cli(cli_args(data, out, 5, "run.on_nonfinite=skip")) == 0
    assert steps(out) == [1, 2, 3, 4, 5]
    logged = losses(out)
    assert logged[2] is None  # the skipped step, logged as null
    assert all(math.isfinite(v) for i, v in enumerate(logged) if i != 2)
    assert losses(out, "nonfinite_skipped") == [0, 0, 1, 1, 1]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["nonfinite_skipped"] == 1
    assert all(math.isfinite(float(v)) for v in state["loss"]["centre.centre"].flatten())
