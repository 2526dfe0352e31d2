"""Runs with DataLoader workers: signals to the whole process group, a worker killed.

Each run reads an image folder with two loader workers and is started in its own session,
so that a signal can go to its whole process group, as schedulers, ``timeout`` and a
terminal's Ctrl-C send it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import (
    cli_args,
    losses,
    run_cli,
    single_thread,
    start_cli,
    steps,
    uninterrupted_run,
    wait_for_steps,
    write_image_folder,
)

import patchdino.train.trainer as trainer_module
from patchdino.checkpoint import load_checkpoint

TOTAL = 14
"""Steps of every run here."""
WORKERS = "data.num_workers=2"

pytestmark = [
    pytest.mark.usefixtures("no_loss_plots"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux process groups"),
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 small PNGs in two classes: 8 steps of 8 images per epoch."""
    return write_image_folder(tmp_path_factory.mktemp("photos"), per_class=32)


@pytest.fixture(scope="module")
def uninterrupted(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return uninterrupted_run(photos, tmp_path_factory.mktemp("whole") / "run", TOTAL, WORKERS)


def start_group(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``python -m patchdino`` as the leader of a new process group, stderr captured."""
    return start_cli(args, cwd, new_session=True)


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for the run to end; its stderr. The process group is killed if it hangs."""
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return err


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "pipeline"), [("SIGTERM", "serial"), ("SIGUSR1", "serial"), ("SIGTERM", "ahead")]
)
def test_group_signal_saves_the_current_step_exits_143_and_resumes(
    name: str, pipeline: str, photos: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = cli_args(photos, out, TOTAL, "--save-every", "100", WORKERS, f"run.pipeline={pipeline}")
    process = start_group(args, tmp_path)
    wait_for_steps(process, out, 3, checkpoint=False)
    os.killpg(process.pid, getattr(signal, name))
    err = finish(process)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 3 <= stopped < TOTAL
    assert steps(out) == list(range(1, stopped + 1))  # the current step was saved
    assert f"{name} received: saved step {stopped}/{TOTAL}" in err
    assert f"resume from step {stopped}" in err
    assert not group_alive(process.pid)  # no worker outlives the run

    with single_thread():
        assert run_cli(args) == 0
    assert steps(out) == list(range(1, TOTAL + 1))
    assert losses(out) == losses(uninterrupted)


def test_first_ctrl_c_to_the_group_saves_and_says_where_a_rerun_resumes(
    photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = start_group(cli_args(photos, out, TOTAL, "--save-every", "100", WORKERS), tmp_path)
    wait_for_steps(process, out, 3, checkpoint=False)
    os.killpg(process.pid, signal.SIGINT)
    err = finish(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    assert steps(out) == list(range(1, stopped + 1))
    assert f"SIGINT received: saved step {stopped}/{TOTAL} to {out / 'checkpoint.pt'}" in err
    assert f"rerun the same command to resume from step {stopped}" in err


def test_a_second_ctrl_c_stops_at_once_and_names_the_saved_step(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A KeyboardInterrupt (what the second Ctrl-C raises) in step 4 leaves step 2 on disk."""
    optimise = trainer_module.Trainer._optimise

    def interrupted(self: trainer_module.Trainer, step: int, *rest: object) -> object:
        if step == 3:
            raise KeyboardInterrupt
        return optimise(self, step, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module.Trainer, "_optimise", interrupted)
    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(photos, out, TOTAL, "--save-every", "2")) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "interrupted at once, the current step not saved" in err
    assert f"{out / 'checkpoint.pt'} still holds the last good state, step 2" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


def worker_pids(pid: int) -> list[int]:
    """The DataLoader workers of process ``pid``: its children forked from it (same command),
    by any of its threads (the inputs of ``run.pipeline=ahead`` are made on a thread of
    their own)."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            children += (task / "children").read_text().split()
    found = []
    for child in map(int, children):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                found.append(child)
        except FileNotFoundError:
            continue
    return found


def test_a_worker_that_dies_during_a_save_stops_the_run_after_the_checkpoint(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The loader's SIGCHLD handler raises the moment a worker dies; a save it interrupted
    would leave no checkpoint of the step. The death is taken after the save instead."""
    save = trainer_module.save_checkpoint
    killed: list[int] = []

    def kill_a_worker_then_save(*args: object, **kwargs: object) -> object:
        if not killed:
            killed.append(worker_pids(os.getpid())[0])
            os.kill(killed[0], signal.SIGKILL)
            while Path(f"/proc/{killed[0]}/stat").read_text().split(") ")[-1][0] != "Z":
                pass  # dead (a zombie until the loader reaps it): SIGCHLD has been sent
            os.sched_yield()
        return save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer_module, "save_checkpoint", kill_a_worker_then_save)
    out = tmp_path / "run"
    with single_thread():
        code = run_cli(cli_args(photos, out, TOTAL, "--save-every", "2", WORKERS))
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"a data loader worker (pid {killed[0]}) was killed by signal SIGKILL" in err
    assert f"{out / 'checkpoint.pt'} still holds the last good state, step 2" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2


@pytest.mark.parametrize("pipeline", ["serial", "ahead"])
def test_a_killed_loader_worker_stops_in_one_line_and_the_rerun_resumes_exactly(
    pipeline: str, photos: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = cli_args(photos, out, TOTAL, "--save-every", "2", WORKERS, f"run.pipeline={pipeline}")
    process = start_group(args, tmp_path)
    wait_for_steps(
        process, out, 2, checkpoint=False
    )  # step 3 of the 8-step epoch: its workers are busy
    workers = worker_pids(process.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    err = finish(process)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"patchdino pretrain: error: a data loader worker (pid {workers[0]}) was killed by "
        "signal SIGKILL (Killed: the out-of-memory killer's signal) during step "
    )
    saved = load_checkpoint(out / "checkpoint.pt")["step"]
    assert f"{out / 'checkpoint.pt'} still holds the last good state, step {saved}" in err
    assert saved >= 2 and saved % 2 == 0
    assert not group_alive(process.pid)

    with single_thread():
        assert run_cli(args) == 0
    assert steps(out) == list(range(1, TOTAL + 1))
    assert losses(out) == losses(uninterrupted)
