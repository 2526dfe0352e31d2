"""Loader workers: their deaths in one line; signals they leave to the main process."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import torch
from torch.utils.data import DataLoader

from patchdino.data.workers import WorkerDiedError, WorkerSignals, iterate, worker_failure


def test_a_worker_killed_by_a_signal_is_named_with_its_signal() -> None:
    err = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
    assert worker_failure(err) == (
        "a data loader worker (pid 4242) was killed by signal SIGKILL "
        "(Killed: the out-of-memory killer's signal)"
    )
    err = RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. ")
    assert (
        worker_failure(err)
        == "a data loader worker (pid 7) was killed by signal SIGTERM (Terminated)"
    )


def test_a_worker_that_exited_is_named_with_its_exit_code() -> None:
    err = RuntimeError(
        "DataLoader worker (pid 12) exited unexpectedly with exit code 1. Details are lost "
        "due to multiprocessing. Rerunning with num_workers=0 may give better error trace."
    )
    assert (
        worker_failure(err) == "a data loader worker (pid 12) exited unexpectedly with exit code 1"
    )
    err = RuntimeError("DataLoader worker (pid(s) 12, 13) exited unexpectedly")
    assert worker_failure(err) == "a data loader worker (pid 12, 13) exited unexpectedly"
    assert worker_failure(WorkerDiedError("as said")) == "as said"


def test_a_death_noticed_while_waiting_is_named_from_the_workers_exit_code() -> None:
    # PyTorch's text then lacks the signal; the worker's exit code (negative: a signal) has it.
    err = RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")
    assert worker_failure(err, {4242: -int(signal.SIGKILL), 99: 0}) == (
        "a data loader worker (pid 4242) was killed by signal SIGKILL "
        "(Killed: the out-of-memory killer's signal)"
    )
    assert worker_failure(err, {4242: 3}) == (
        "a data loader worker (pid 4242) exited unexpectedly with exit code 3"
    )
    assert worker_failure(err, {99: -9}) == "a data loader worker (pid 4242) exited unexpectedly"
    both = RuntimeError("DataLoader worker (pid(s) 12, 13) exited unexpectedly")
    assert worker_failure(both, {12: -9, 13: -15}) == (
        "a data loader worker (pid 12, 13) exited unexpectedly"
    )


def test_other_errors_are_not_worker_deaths() -> None:
    assert worker_failure(RuntimeError("Caught ValueError in DataLoader worker process 0")) is None
    assert (
        worker_failure(ValueError("DataLoader worker (pid 1) is killed by signal: Killed.")) is None
    )


class _Signalled(torch.utils.data.Dataset[int]):
    """Item ``i`` sends SIGTERM, SIGUSR1 and SIGINT to its own worker, then returns ``i``."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        for name in ("SIGTERM", "SIGUSR1", "SIGINT"):
            os.kill(os.getpid(), getattr(signal, name))
        return index


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")
def test_workers_ignore_the_signals_left_to_the_main_process() -> None:
    names = ("SIGTERM", "SIGUSR1", "SIGINT")
    loader = DataLoader(
        _Signalled(), batch_size=2, num_workers=2, worker_init_fn=WorkerSignals(names)
    )
    assert [b.tolist() for b in iterate(loader, names)] == [[0, 1], [2, 3]]
