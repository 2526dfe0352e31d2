"""The library's error types: input the user can fix, and checkpoints that cannot be used."""

from __future__ import annotations


class InputError(ValueError):
    """A problem with what the user gave: a configuration, data set, weights, device or option.

    The message says what is wrong and, where it helps, what to do. The command line prints
    it as one line and exits with code 2; every other exception keeps its traceback. A
    :class:`ValueError`, so code that catches ValueError still catches it.
    """


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says why (one line, exit 2)."""
