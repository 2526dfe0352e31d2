"""Stop signals: SIGTERM, SIGUSR1 and a first Ctrl-C ask the run to save at a step boundary.

Cluster schedulers pre-empt a job with SIGTERM (SLURM can send SIGUSR1 ahead of time), often
to every process of the job, data loader workers included; ``timeout`` and ``kill -- -PGID``
signal the whole process group, and Ctrl-C sends SIGINT to the terminal's foreground group.
Only the main process acts on them: its loader workers ignore them
(:data:`HANDLED_SIGNALS`, see :mod:`patchdino.data.workers`) and are shut down by the main
process when the run ends.

A second Ctrl-C stops at once (``KeyboardInterrupt``), without saving the current step.

A checkpoint is written whole or not at all: :func:`deferred_signal` holds a signal whose
Python handler raises (the data loader's SIGCHLD handler, which raises as soon as a loader
worker dies) until the save is done, so that the death of a worker during a save stops the
run after it, with the checkpoint on disk.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")
"""Pre-emption signals: save the current step, then exit with code 143."""
INTERRUPT = "SIGINT"
"""Ctrl-C: the first saves the current step and exits with code 130; a second stops at once."""
HANDLED_SIGNALS = (*STOP_SIGNALS, INTERRUPT)
"""Every signal the training process handles itself (and its loader workers ignore)."""
WORKER_EXIT: int | None = getattr(signal, "SIGCHLD", None)
"""The signal by which a loader worker's death reaches the main process (none on Windows)."""


def stop_exit_code(signal_name: str) -> int:
    """Exit code of a run stopped by ``signal_name``: 130 for Ctrl-C, else 143 (SIGTERM's)."""
    return 130 if signal_name == INTERRUPT else 143


class StopRequest:
    """Records the first stop signal received; the loop polls :attr:`signal_name`."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        """Catch the stop signals (only possible from the main thread; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in HANDLED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if name == INTERRUPT:
            # The next Ctrl-C raises KeyboardInterrupt wherever the run is.
            signal.signal(number, signal.default_int_handler)
        if self.signal_name is None:
            self.signal_name = name

    def restore(self) -> None:
        """Put the previous handlers back."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()


@contextlib.contextmanager
def deferred_signal(number: int | None) -> Iterator[None]:
    """Run the block with ``number``'s Python handler held back, then call it once if the
    signal arrived meanwhile (its exception, if any, is raised when the block ends).

    Only in the main thread, where Python runs signal handlers; elsewhere the block runs as
    it is, as it does for ``None`` (a signal the platform lacks). A handler that is not a
    Python function (default, ignored) is left alone.
    """
    handler = None if number is None else signal.getsignal(number)
    if (
        number is None
        or threading.current_thread() is not threading.main_thread()
        or not callable(handler)
    ):
        yield
        return
    arrived: list[FrameType | None] = []
    signal.signal(number, lambda _number, frame: arrived.append(frame))
    try:
        yield
    finally:
        signal.signal(number, handler)
    if arrived:
        handler(number, arrived[-1])
