"""Numeric precision of training and evaluation: the one place that decides about bf16 autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from patchdino.config.checks import literal_values
from patchdino.config.run import Precision

PRECISIONS: tuple[str, ...] = literal_values(Precision) or ()
"""``run.precision`` values: ``auto`` is bf16 autocast on CUDA and fp32 elsewhere."""


def effective_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device``.

    Raises:
        ValueError: for a value outside :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return "bf16" if bf16 else "fp32"


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when :func:`effective_precision` says bf16, else nothing."""
    if effective_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
