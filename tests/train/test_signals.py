"""Stop signals: pre-emption and Ctrl-C are recorded; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import os
import signal

import pytest

from patchdino.train.signals import StopRequest, deferred_signal, stop_exit_code


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_stop_signal_is_recorded_until_the_step_boundary(name: str) -> None:
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), getattr(signal, name))
        assert stop.signal_name == name
    finally:
        stop.restore()


def test_a_second_ctrl_c_raises_keyboard_interrupt_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)  # ignored when the suite runs in the background
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_later_signal_does_not_replace_the_first() -> None:
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGUSR1"
    finally:
        stop.restore()


def test_exit_codes() -> None:
    assert stop_exit_code("SIGINT") == 130
    assert stop_exit_code("SIGTERM") == stop_exit_code("SIGUSR1") == 143


class HandlerRanError(Exception):
    pass


def _raise(number: int, frame: object) -> None:
    raise HandlerRanError(signal.Signals(number).name)


def test_a_deferred_signal_is_handled_once_after_the_block() -> None:
    previous = signal.signal(signal.SIGUSR2, _raise)
    try:
        inside = []
        with pytest.raises(HandlerRanError, match="SIGUSR2"), deferred_signal(signal.SIGUSR2):
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR2)
            inside.append("the block went on")
        assert inside == ["the block went on"]
        assert signal.getsignal(signal.SIGUSR2) is _raise
        with deferred_signal(signal.SIGUSR2):  # no signal: nothing raised
            pass
        with pytest.raises(HandlerRanError):
            os.kill(os.getpid(), signal.SIGUSR2)  # the handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_deferring_leaves_non_python_handlers_and_missing_signals_alone() -> None:
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with deferred_signal(signal.SIGUSR2):
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGUSR2)
        with deferred_signal(None):
            pass
    finally:
        signal.signal(signal.SIGUSR2, previous)
