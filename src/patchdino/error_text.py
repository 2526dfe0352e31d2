"""How an exception from a dependency is quoted in a one-line message."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first informative line of ``err``'s message (its type's name when it has none).

    PyTorch's state-dict errors start with a title line ending in ``:``; the line after it is
    the informative one.
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[1]
    return lines[0] if lines else type(err).__name__
