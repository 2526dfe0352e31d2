"""Rules shared by the sections' checks: each returns a one-line problem or None.

A rule that a component's constructor also needs (a centre's momentum, a crop's scale range)
is written here once and called from both places, so the two can never disagree.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any


def literal_values(annotation: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` annotation (also inside ``X | None``), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            values = literal_values(arg)
            if values is not None:
                return values
    return None


def choice_problem(key: str, value: Any, allowed: tuple[Any, ...]) -> str | None:
    """``key: 'value' is not one of a, b`` when ``value`` is not allowed, else None."""
    if value in allowed:
        return None
    return f"{key}: '{value}' is not one of {', '.join(map(str, allowed))}"


def interval_problem(
    name: str, interval: tuple[float, float], upper: float = math.inf
) -> str | None:
    """Why ``interval`` is not a range ``0 < min <= max <= upper``, or None when it is.

    The one rule for the scale and aspect-ratio ranges of crops, wherever they are given.

    Args:
        name: name of the range in the message.
        interval: ``(min, max)``.
        upper: largest allowed ``max`` (``math.inf``: no bound).
    """
    low, high = interval
    if 0.0 < low <= high <= upper:
        return None
    bound = "" if math.isinf(upper) else f" <= {upper:g}"
    return f"{name} must satisfy 0 < min <= max{bound}, got {tuple(interval)}"


def momentum_problem(name: str, value: float) -> str | None:
    """An EMA momentum must lie in ``[0, 1)``: 1 would never move (the centre's rule)."""
    if 0.0 <= value < 1.0:
        return None
    return f"{name} must lie in [0, 1), got {value}"


def pair_limit_problem(name: str, value: int) -> str | None:
    """A limit of pairs per view pair is ``>= 0`` (0 keeps all)."""
    if value >= 0:
        return None
    return f"{name} must be >= 0 (0 keeps all), got {value}"


def registers_problem(name: str, value: int | None) -> str | None:
    """A count of register tokens is ``>= 0``, or None for the arch's own."""
    if value is None or value >= 0:
        return None
    return f"{name} must be >= 0 or null, got {value}"


def positive_problems(values: dict[str, float]) -> list[str]:
    """``name must be > 0, got v`` for every value of ``{name: v}`` that is not positive."""
    return [f"{name} must be > 0, got {v}" for name, v in values.items() if v <= 0]


def fraction_problem(name: str, value: float, closed: bool = True) -> str | None:
    """``value`` must lie in ``[0, 1]`` (``closed``) or ``[0, 1)``."""
    if 0.0 <= value <= 1.0 and (closed or value < 1.0):
        return None
    return f"{name} must lie in [0, {'1]' if closed else '1)'}, got {value}"
