"""Pre-emption signals: SIGTERM and SIGUSR1 ask the run to save and stop at a step boundary."""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class StopRequest:
    """Records the first stop signal received; the loop polls :attr:`signal_name`."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        """Catch the stop signals (only possible from the main thread; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(number).name

    def restore(self) -> None:
        """Put the previous handlers back."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()
