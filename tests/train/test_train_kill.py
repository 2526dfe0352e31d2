"""A run killed at any moment (SIGKILL, SIGTERM) continues to the uninterrupted result."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from train_fixtures import (
    cli_args,
    losses,
    run_cli,
    single_thread,
    skip_loss_plots,
    start_cli,
    steps,
    tensorboard_scalars,
    wait_for_steps,
)

from patchdino.checkpoint import load_checkpoint

TOTAL = 14
"""Steps of every run here: long enough to kill the subprocess in the middle."""


pytestmark = pytest.mark.usefixtures("no_loss_plots")


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with single_thread(), pytest.MonkeyPatch.context() as patch:
        skip_loss_plots(patch)
        assert run_cli(cli_args(data, out, TOTAL, "--save-every", "2")) == 0
    return out


def test_sigkill_mid_run_then_rerun_logs_each_step_once_and_matches(
    data: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = cli_args(data, out, TOTAL, "--save-every", "2")
    process = start_cli(args, tmp_path)
    try:
        wait_for_steps(process, out, 5)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    logged = steps(out)
    saved = load_checkpoint(out / "checkpoint.pt")["step"]
    assert saved % 2 == 0 and 4 <= saved <= max(logged) < TOTAL

    with single_thread():
        assert run_cli(args) == 0
    assert steps(out) == list(range(1, TOTAL + 1))
    assert losses(out) == losses(uninterrupted)
    assert losses(out, "loss_cls") == losses(uninterrupted, "loss_cls")
    shown = tensorboard_scalars(out, "loss")
    assert [s for s, _ in shown] == list(range(1, TOTAL + 1))
    assert [v for _, v in shown] == pytest.approx(losses(uninterrupted))
    assert load_checkpoint(out / "checkpoint.pt")["step"] == TOTAL
    names = sorted(p.name for p in out.iterdir())
    kept = [n for n in names if n.startswith("checkpoint-step")]  # run.keep_checkpoints=2
    assert len(kept) == 1 and load_checkpoint(out / kept[0])["step"] < TOTAL
    assert [n for n in names if n not in kept] == [  # no temporary file of the killed save
        "checkpoint.pt",
        "checkpoints.json",
        "config.yaml",
        "config_history.jsonl",
        "loss.png",
        "metrics.jsonl",
        "tensorboard",
    ]


def test_sigterm_saves_the_current_step_exits_143_and_resumes(
    data: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = cli_args(data, out, TOTAL, "--save-every", "100")
    process = start_cli(args, tmp_path)
    try:
        wait_for_steps(process, out, 3, checkpoint=False)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 3 <= stopped < TOTAL
    assert f"SIGTERM received: saved step {stopped}/{TOTAL}" in err
    assert "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert steps(out) == list(range(1, stopped + 1))

    with single_thread():
        assert run_cli(args) == 0
    assert steps(out) == list(range(1, TOTAL + 1))
    assert losses(out) == losses(uninterrupted)
