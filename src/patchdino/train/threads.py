"""How many CPU threads the training step uses, on a CPU shared with other processes.

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()`` threads and wait
for the slowest. When another busy process holds one of the cores, the thread that shares
that core runs only part of the time and every operation waits for it: on two cores, two
threads beside one busy process train at less than half the speed of one thread.

:class:`CpuThreads` with ``run.cpu_threads=None`` (the default) therefore adapts: every
:data:`INTERVAL_S` seconds it measures how much of the cores it may use the *other*
processes took (``/proc/stat`` minus this process and its children, e.g. loader workers)
and sets ``threads = floor(cores - others + 1/4)``, between 1 and the threads torch started
with (``OMP_NUM_THREADS``, or the number of cores). Alone it keeps every thread; beside one
busy process on two cores it drops to one, and it takes the thread back when the other
process ends. A number fixes the threads instead. Without ``/proc`` (not Linux) the threads
stay as torch chose them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

INTERVAL_S = 2.0
"""Seconds between two measurements of the other processes' CPU use."""
PROBE_S = 0.3
"""Seconds of the first measurement, taken idle when adapting starts."""
FIRST_INTERVAL_S = 0.5
"""Shortest measurement worth a choice (the trainer's first, made over its set-up)."""
MARGIN = 0.25
"""Share of a core the other processes may take before a thread is given up."""

Clock = Callable[[], float]


def cpu_ticks(cpus: set[int], proc: Path = Path("/proc")) -> int | None:
    """Busy clock ticks (``USER_HZ``) of the given CPUs since boot, or None without /proc.

    Busy is every column of a ``cpuN`` line of ``/proc/stat`` but idle and iowait (guest
    time is already counted in user time and is left out).
    """
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(values) - values[3] - values[4]
    return busy


def own_ticks(pid: int, proc: Path = Path("/proc")) -> int | None:
    """CPU ticks used by process ``pid`` and its direct children (utime + stime), or None
    without /proc."""

    def ticks(stat: str) -> tuple[int, int]:
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = stat[stat.rindex(")") + 2 :].split()
        return int(rest[1]), int(rest[11]) + int(rest[12])  # ppid, utime + stime

    try:
        total = ticks((proc / str(pid) / "stat").read_text())[1]
    except (OSError, ValueError, IndexError):
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            parent, used = ticks((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if parent == pid:
            total += used
    return total


def threads_for(cores: int, others: float, most: int) -> int:
    """Threads to use when the other processes take ``others`` of ``cores`` cores:
    ``floor(cores - others + MARGIN)``, between 1 and ``most``."""
    return max(1, min(most, math.floor(cores - others + MARGIN)))


class CpuThreads:
    """Sets ``torch.set_num_threads`` for the training step (see the module docstring).

    Args:
        setting: ``run.cpu_threads``: None adapts, a number fixes the threads.
        adapt: whether adapting applies (the CPU device); a fixed number always applies.
        clock: seconds, monotonic (a parameter for tests).
        proc: the ``/proc`` folder (a parameter for tests).
        cpus: the CPUs this process may run on; None reads its affinity.
        sleep: waits the first measurement's :data:`PROBE_S` seconds (a parameter for tests).
    """

    def __init__(
        self,
        setting: int | None,
        adapt: bool,
        clock: Clock = time.monotonic,
        proc: Path = Path("/proc"),
        cpus: set[int] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.most = torch.get_num_threads()
        self.clock, self.proc, self.pid = clock, proc, os.getpid()
        if cpus is None:
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.cpus = set(cpus)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.adaptive = setting is None and adapt and len(self.cpus) > 1
        if setting is not None:
            torch.set_num_threads(setting)
        self._last: tuple[float, int, int] | None = None
        if self.adaptive:
            self._last = self._sample()
            self.adaptive = self._last is not None
        if self.adaptive:
            # A first choice before any work, so that torch's thread pool starts the size it
            # will run at (a pool that shrinks later was measured slower than one made small).
            sleep(PROBE_S)
            self.update(min_interval=0.0)

    def restore(self) -> None:
        """Give torch back the threads it had before (the setting is the run's alone)."""
        torch.set_num_threads(self.most)

    @property
    def threads(self) -> int:
        """The threads the step uses now."""
        return torch.get_num_threads()

    def _sample(self) -> tuple[float, int, int] | None:
        busy, own = cpu_ticks(self.cpus, self.proc), own_ticks(self.pid, self.proc)
        if busy is None or own is None:
            return None
        return self.clock(), busy, own

    def update(self, min_interval: float = INTERVAL_S) -> int:
        """Re-measure when ``min_interval`` seconds have passed since the last measurement
        and set the threads; returns them."""
        if not self.adaptive or self._last is None:
            return self.threads
        if self.clock() - self._last[0] < min_interval:
            return self.threads
        now = self._sample()
        if now is None:
            self.adaptive = False
            return self.threads
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        if t1 <= t0:
            return self.threads  # no time has passed: nothing measured
        self._last = now
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / self.hz / (t1 - t0)
        chosen = threads_for(len(self.cpus), others, self.most)
        if chosen != self.threads:
            torch.set_num_threads(chosen)
        return chosen
