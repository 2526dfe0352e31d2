"""DataLoader worker processes: signals they leave to the main process, and their deaths.

A signal sent to a whole process group (``kill -- -PGID``, ``timeout``, Ctrl-C in a terminal,
a scheduler's pre-emption) reaches the loader workers too. PyTorch's workers die of SIGTERM
and SIGUSR1 and quit on SIGINT, and the main process then fails with "DataLoader worker ...
is killed by signal" before it can save. :func:`iterate` runs a loader whose workers leave
such signals to the main process:

- the signals are blocked while the workers are forked (a child inherits the blocked set,
  so none can reach a worker before it is ready), and each worker then ignores them
  (:class:`WorkerSignals`), which also discards any that arrived meanwhile;
- SIGTERM stays what PyTorch makes of it when the main process sends it (the worker exits:
  the loader's last resort to stop a worker that does not finish) and is ignored from
  anyone else;
- the workers are shut down as soon as iteration ends, by an error too, not when the
  iterator is garbage collected (a traceback can keep it alive until the interpreter exits,
  which then waits for them).

A worker killed by the system (the out-of-memory killer, ``kill -9``) surfaces in the main
process as a RuntimeError from wherever it is, or as a broken connection while a batch is
received; :func:`worker_failure` and :func:`iterate` turn both into :class:`WorkerDiedError`
with a one-line message.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from torch.utils.data import DataLoader

T = TypeVar("T")

_WORKER_DEATH = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? (?P<pids>[\d, ]+)\) "
    r"(?:is killed by signal: (?P<signal>[^.]+)|exited unexpectedly(?P<rest>[^.\n]*))"
)
_NOTICE_SECONDS = 1.0
"""How long a broken connection to a worker waits for the worker's death to be visible."""


class WorkerDiedError(RuntimeError):
    """A DataLoader worker process died; the one-line message says how."""


def _signal_numbers(names: Sequence[str]) -> set[int]:
    return {int(getattr(signal, n)) for n in names if hasattr(signal, n)}


class WorkerSignals:
    """A DataLoader ``worker_init_fn``: the worker leaves the signals ``names`` to its parent.

    Picklable, so it works with the ``spawn`` start method too.

    Args:
        names: signal names, e.g. ``("SIGTERM", "SIGUSR1", "SIGINT")``; names this platform
            lacks are left out.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __call__(self, worker_id: int) -> None:
        numbers = _signal_numbers(self.names)
        term = int(signal.SIGTERM)
        if term in numbers and hasattr(signal, "sigwaitinfo"):
            # Kept blocked and taken by a thread, which can tell who sent it.
            signal.pthread_sigmask(signal.SIG_BLOCK, {term})
            threading.Thread(
                target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True
            ).start()
            numbers.discard(term)
        for number in numbers:
            signal.signal(number, signal.SIG_IGN)  # also discards one already pending
        if numbers and hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, numbers)


def _exit_on_sigterm_from(parent: int) -> None:
    """Exit when ``parent`` sends SIGTERM (as PyTorch's workers do); ignore other senders."""
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            os._exit(0)


def iterate(loader: DataLoader[T], names: Sequence[str]) -> Iterator[T]:
    """The batches of ``loader``, whose workers leave the signals ``names`` to this process.

    The loader's ``worker_init_fn`` must be :class:`WorkerSignals` of the same ``names``.
    Signals that arrive while the workers are being started reach this process's handlers
    once they are. The workers are shut down when iteration ends, however it ends.

    Raises:
        WorkerDiedError: a worker died (killed by a signal, or exited) while a batch was
            awaited.
    """
    numbers = _signal_numbers(names)
    if loader.num_workers == 0:
        yield from loader
        return
    previous = None
    if numbers and hasattr(signal, "pthread_sigmask"):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, numbers)
    try:
        iterator = iter(loader)
    finally:
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    try:
        yield from iterator
    except Exception as err:
        failure = worker_failure(err, _exit_codes(iterator))
        if failure is None and isinstance(err, (OSError, EOFError)):
            failure = _dead_worker(_NOTICE_SECONDS)
        if failure is None:
            raise
        raise WorkerDiedError(failure) from err
    finally:
        _shutdown(iterator)


def _shutdown(iterator: Any) -> None:
    """Stop the workers of a multi-process loader iterator now (a no-op for others)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()


def _exit_codes(iterator: Any) -> dict[int, int]:
    """The exit codes of the workers of ``iterator`` that have ended, by pid (negative: the
    signal that killed it, as :attr:`multiprocessing.Process.exitcode` gives it)."""
    codes: dict[int, int] = {}
    for worker in getattr(iterator, "_workers", None) or ():
        pid, code = getattr(worker, "pid", None), getattr(worker, "exitcode", None)
        if isinstance(pid, int) and isinstance(code, int):
            codes[pid] = code
    return codes


def _dead_worker(seconds: float) -> str | None:
    """One line naming a loader worker of this process that has died, waiting up to
    ``seconds`` for its death to show; None if every worker is alive."""
    from torch.utils.data._utils.signal_handling import _error_if_any_worker_fails

    deadline = time.monotonic() + seconds
    while True:
        try:
            _error_if_any_worker_fails()
        except RuntimeError as err:
            return worker_failure(err)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def worker_failure(err: BaseException, exit_codes: Mapping[int, int] | None = None) -> str | None:
    """One line saying how a DataLoader worker died, if that is what ``err`` reports.

    PyTorch reports a death it notices through its SIGCHLD handler with the signal, and one it
    notices while waiting for a batch only as "exited unexpectedly"; ``exit_codes`` (the ended
    workers' exit codes by pid, negative for a signal) then supply what the text lacks.

    Returns:
        e.g. ``"a data loader worker (pid 1234) was killed by signal SIGKILL (Killed: the
        out-of-memory killer's signal)"``; None for any other error.
    """
    if isinstance(err, WorkerDiedError):
        return str(err)
    if not isinstance(err, RuntimeError):
        return None
    found = _WORKER_DEATH.search(str(err))
    if found is None:
        return None
    pids = [int(p) for p in re.findall(r"\d+", found["pids"])]
    who = f"a data loader worker (pid {', '.join(str(p) for p in pids)})"
    if found["signal"] is not None:
        return _killed_by(who, found["signal"].strip())
    rest = (found["rest"] or "").strip()
    codes = {(exit_codes or {}).get(p) for p in pids}
    code = codes.pop() if len(codes) == 1 else None
    if not rest and code is not None and code < 0:
        try:
            return _killed_by(who, signal.strsignal(-code) or f"signal {-code}")
        except ValueError:
            pass
    if not rest and code is not None and code > 0:
        rest = f"with exit code {code}"
    return f"{who} exited unexpectedly{' ' + rest if rest else ''}"


def _killed_by(who: str, description: str) -> str:
    """``who`` was killed by the signal ``strsignal`` describes as ``description``."""
    name = _signal_name(description)
    oom = ": the out-of-memory killer's signal" if name == "SIGKILL" else ""
    shown = f"{name} ({description}{oom})" if name else description
    return f"{who} was killed by signal {shown}"


def _signal_name(description: str) -> str | None:
    """``"SIGKILL"`` for ``"Killed"`` (the text ``strsignal`` gives), None if unknown."""
    for number in signal.valid_signals():
        try:
            text = signal.strsignal(number)
            name = signal.Signals(number).name
        except ValueError:
            continue
        if text == description:
            return name
    return None
