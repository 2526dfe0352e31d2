"""A killed or hung rank under torchrun: the group restarts and resumes exactly, or stops.

The killed-rank trial is ``benchmarks/restart_trials.py``'s (docs/scaling.md reports 20 of
them at random kill points).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from patchdino.checkpoint import load_checkpoint
from patchdino.train import distributed

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "restart_trials.py"
STEPS = 12
LIMIT = 900.0
"""Seconds after which a run counts as hung: a guard against hangs, far above any load."""


@pytest.fixture(scope="module")
def kit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("restart_trials", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def uninterrupted(kit: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("restarts")
    data = kit.write_idx(root / "data")
    run = root / "whole" / "run"
    run.parent.mkdir()
    result = kit.trial(data, run, STEPS, "none", run.parent / "log.txt", LIMIT)
    assert result["returncode"] == 0, (run.parent / "log.txt").read_text()[-3000:]
    return run


def test_a_killed_rank_is_restarted_by_torchrun_and_resumes_exactly(
    kit: ModuleType, uninterrupted: Path, tmp_path: Path
) -> None:
    data = uninterrupted.parents[1] / "data"
    run = tmp_path / "run"
    result = kit.trial(data, run, STEPS, "step:7", tmp_path / "log.txt", LIMIT)
    log = (tmp_path / "log.txt").read_text()
    assert result["killed"] and result["returncode"] == 0, log[-3000:]
    assert "Connection refused" not in log
    assert result["steps"] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in kit.logged(run)] == [r["loss"] for r in kit.logged(uninterrupted)]
    got, want = kit.teacher(run), kit.teacher(uninterrupted)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert result["orphans"] == []


def _without_restarts(kit: ModuleType, data: Path, run: Path, *overrides: str) -> list[str]:
    """The trial's torchrun command for 40 steps, with ``--max-restarts 0``."""
    command = kit.torchrun(data, run, 40)
    command[command.index("--max-restarts") + 1] = "0"
    return [*command, *overrides]


def _left(process: subprocess.Popen[Any]) -> list[str]:
    """Processes of the run's session still alive a second after it ended."""
    time.sleep(1.0)
    found = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True)
    return found.stdout.split()


def test_a_hung_rank_stops_the_others_within_the_timeout_and_leaves_no_process(
    kit: ModuleType, uninterrupted: Path, tmp_path: Path
) -> None:
    data = uninterrupted.parents[1] / "data"
    run = tmp_path / "run"
    # Long enough that no rank of a loaded machine waits that long for a live peer.
    command = _without_restarts(kit, data, run, "run.dist_timeout=30")
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=kit.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + LIMIT
        while time.time() < deadline and not (run / "checkpoint.pt").exists():
            time.sleep(0.05)
        assert (run / "checkpoint.pt").exists(), "no checkpoint in time"
        (victim,) = [c for c in kit.children(process.pid) if kit.local_rank(c) == 1]
        os.kill(victim, signal.SIGSTOP)
        stopped = time.time()
        output, _ = process.communicate(timeout=LIMIT)
        noticed = time.time() - stopped
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    lines = [line for line in output.splitlines() if "did not answer" in line]
    assert lines, output[-3000:]
    assert lines[0].startswith("patchdino pretrain: error: rank 0: another process of the job")
    assert "run.dist_timeout=30 s" in lines[0] and "rerun to resume" in lines[0]
    saved = load_checkpoint(run / "checkpoint.pt")["step"]  # intact and verified
    assert saved >= 5
    assert _left(process) == []  # the stopped rank is gone too
    print(json.dumps({"noticed_after_s": round(noticed, 1)}))


def test_when_the_restarts_are_spent_every_process_exits(
    kit: ModuleType, uninterrupted: Path, tmp_path: Path
) -> None:
    data = uninterrupted.parents[1] / "data"
    run = tmp_path / "run"
    command = _without_restarts(kit, data, run)
    with (tmp_path / "log.txt").open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=kit.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.time() + LIMIT
            while time.time() < deadline and not kit.logged(run):
                time.sleep(0.05)
            (victim,) = [c for c in kit.children(process.pid) if kit.local_rank(c) == 1]
            os.kill(victim, signal.SIGKILL)
            code = process.wait(timeout=LIMIT)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert code != 0
    assert _left(process) == []


def test_peer_failures_are_told_from_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting "
        "5000ms for recv operation to complete"
    )
    assert distributed.peer_failure(gloo)
    closed = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [::1]:1")
    assert distributed.peer_failure(closed)
    # the next collective on a connection an (asynchronous) timed-out one closed
    assert distributed.peer_failure(RuntimeError("Application timeout caused pair closure"))
    assert not distributed.peer_failure(RuntimeError("DataLoader timed out after 5 seconds"))
    assert not distributed.peer_failure(ValueError("gloo timed out"))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    assert not distributed.peer_failure(gloo)


def test_the_process_group_keys_are_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's store outlives a failed attempt; a new attempt must not read its keys."""
    store = torch.distributed.HashStore()
    monkeypatch.setattr(distributed.dist, "rendezvous", lambda *a, **k: iter([(store, 0, 1)]))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    distributed._attempt_store(0, 1).set("rank_1", b"127.0.0.1:1111")  # the dead peer
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    second = distributed._attempt_store(0, 1)
    assert not second.check(["rank_1"])
    second.set("rank_1", b"127.0.0.1:2222")
    assert second.get("rank_1") == b"127.0.0.1:2222"
