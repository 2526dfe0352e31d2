"""Stop signals: pre-emption and Ctrl-C are recorded; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import os
import signal

import pytest

from patchdino.train.signals import StopRequest, stop_exit_code


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_a_stop_signal_is_recorded_until_the_step_boundary(name: str) -> None:
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), getattr(signal, name))
        assert stop.signal_name == name
    finally:
        stop.restore()


def test_a_second_ctrl_c_raises_keyboard_interrupt_at_once() -> None:
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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
