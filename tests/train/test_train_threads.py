"""The training step's CPU threads: /proc readings, the rule, and the adaptation over time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from patchdino.train.threads import INTERVAL_S, CpuThreads, cpu_ticks, own_ticks, threads_for

HZ = os.sysconf("SC_CLK_TCK")


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _no_sleep(seconds: float) -> None:
    """The first measurement's wait, skipped: the fake clock does not move by itself."""


class FakeProc:
    """A ``/proc`` folder with two CPUs, this process and the processes given."""

    def __init__(self, root: Path) -> None:
        self.root, self.busy, self.own, self.child = root, [0, 0], 0, 0
        self.write()

    def write(self) -> None:
        lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
        for n, busy in enumerate(self.busy):  # user=busy, idle and iowait never count
            lines.append(f"cpu{n} {busy} 0 0 {1000 + n} 50 0 0 0 0 0")
        lines.append("cpu7 999 999 999 0 0 0 0 0 0 0")  # not ours
        (self.root / "stat").write_text("\n".join(lines) + "\n")
        me = os.getpid()
        for pid, ppid, used in ((me, 1, self.own), (me + 1, me, self.child), (me + 2, 1, 500)):
            (self.root / str(pid)).mkdir(exist_ok=True)
            # (comm) may hold spaces and parentheses; utime and stime are fields 14 and 15.
            tail = " ".join(["0"] * 9) + f" {used} 0 " + " ".join(["0"] * 30)
            (self.root / str(pid) / "stat").write_text(f"{pid} (pt (main) x) S {ppid} {tail}")

    def run(self, seconds: float, own: float, others: float) -> None:
        """``seconds`` pass; this process uses ``own`` cores, the others ``others``."""
        ticks_own, ticks_others = round(own * seconds * HZ), round(others * seconds * HZ)
        self.own += ticks_own
        total = ticks_own + ticks_others
        self.busy = [self.busy[0] + total // 2, self.busy[1] + total - total // 2]
        self.write()


def test_cpu_and_own_ticks(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.busy, proc.own, proc.child = [30, 12], 7, 5
    proc.write()
    assert cpu_ticks({0, 1}, tmp_path) == 42  # cpu7 and the summary line left out
    assert cpu_ticks({1}, tmp_path) == 12
    assert own_ticks(os.getpid(), tmp_path) == 12  # itself and its child, not pid + 2
    assert cpu_ticks({0}, tmp_path / "missing") is None
    assert own_ticks(os.getpid(), tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("others", "expected"),
    [(0.0, 2), (0.05, 2), (0.7, 1), (1.0, 1), (1.9, 1), (0.0, 2)],
)
def test_threads_for(others: float, expected: int) -> None:
    assert threads_for(2, others, most=2) == expected
    assert threads_for(8, others, most=4) == 4
    assert threads_for(2, others, most=1) == 1


def test_adapts_to_a_busy_process_and_back(tmp_path: Path, two_threads: None) -> None:
    proc, now = FakeProc(tmp_path), [0.0]
    threads = CpuThreads(
        None, adapt=True, clock=lambda: now[0], proc=tmp_path, cpus={0, 1}, sleep=_no_sleep
    )
    assert threads.threads == 2
    steps = [(INTERVAL_S / 2, 2.0, 0.0), (INTERVAL_S, 2.0, 0.0)]  # alone
    steps += [(INTERVAL_S, 1.3, 0.7), (INTERVAL_S, 1.0, 1.0)]  # one busy process beside
    steps += [(INTERVAL_S, 1.0, 0.02)]  # it ended
    seen = []
    for seconds, own, others in steps:
        now[0] += seconds
        proc.run(seconds, own, others)
        seen.append(threads.update())
    assert seen == [2, 2, 1, 1, 2]
    threads.restore()
    assert torch.get_num_threads() == 2


def test_a_number_fixes_the_threads_and_cuda_keeps_torchs(
    tmp_path: Path, two_threads: None
) -> None:
    proc, now = FakeProc(tmp_path), [0.0]
    fixed = CpuThreads(
        1, adapt=True, clock=lambda: now[0], proc=tmp_path, cpus={0, 1}, sleep=_no_sleep
    )
    now[0] += 10
    proc.run(10, 1.0, 0.0)
    assert fixed.update() == 1 and torch.get_num_threads() == 1
    fixed.restore()
    cuda = CpuThreads(
        None, adapt=False, clock=lambda: now[0], proc=tmp_path, cpus={0, 1}, sleep=_no_sleep
    )
    now[0] += 10
    proc.run(10, 1.0, 1.0)
    assert cuda.update() == 2
    no_proc = CpuThreads(None, adapt=True, proc=tmp_path / "missing", cpus={0, 1})
    assert not no_proc.adaptive and no_proc.update() == 2


def test_the_first_choice_is_made_before_any_work(tmp_path: Path, two_threads: None) -> None:
    """Adapting starts with an idle measurement, so a busy machine starts at one thread."""
    proc, now = FakeProc(tmp_path), [0.0]

    def busy_beside(seconds: float) -> None:
        now[0] += seconds
        proc.run(seconds, own=0.0, others=1.0)

    threads = CpuThreads(
        None, adapt=True, clock=lambda: now[0], proc=tmp_path, cpus={0, 1}, sleep=busy_beside
    )
    assert now[0] > 0 and threads.threads == 1
    threads.restore()
