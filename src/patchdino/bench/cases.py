"""What one benchmark run measures: its cases (one table row each) and shared settings.

Modes:

- ``cls``: model-only training step of plain DINO (``loss.terms.patch.weight=0``).
- ``patch``: model-only training step with the patch loss (the paper's setting).
- ``reference``: the same loss computed as the reference does (head on all tokens, per-pair
  gathers and cross-entropies; :mod:`patchdino.bench.reference_loss`).
- ``pipeline``: uint8 canvas batch on the device -> multi-crop views -> matching and pair plan.
- ``end2end``: ``pipeline`` and the ``patch`` training step, every step, the inputs made as the
  trainer makes them (``run.pipeline``: one step ahead, beside the model step, on CUDA).

A model-only step takes views and plan already on the device and runs the student's forward
and backward, the teacher's forward, the optimiser step and the EMA update. Variants are extra
``patch`` rows with their own ``key=value`` overrides (e.g. ``loss.terms.patch.pairs_per_view=16``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from patchdino.config import Config, load_config
from patchdino.errors import InputError
from patchdino.losses import kernel
from patchdino.models import backbone

MODES = ("cls", "patch", "reference", "pipeline", "end2end")
MODEL_KINDS = ("model", "reference")
"""Case kinds timed as model-only steps."""

_MODE_KIND = {
    "cls": "model",
    "patch": "model",
    "reference": "reference",
    "pipeline": "pipeline",
    "end2end": "end2end",
}
_MODE_OVERRIDES: dict[str, tuple[str, ...]] = {"cls": ("loss.terms.patch.weight=0",)}


@dataclass(frozen=True)
class BenchSettings:
    """Settings shared by every case.

    Attributes:
        device: where everything runs.
        steps: timed steps per case.
        warmup: untimed steps before them.
        canvas: side of the synthetic square uint8 source images.
        channels: image channels (3).
    """

    device: torch.device
    steps: int = 10
    warmup: int = 3
    canvas: int = 320
    channels: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup < 0:
            raise InputError(f"need steps >= 1 and warmup >= 0, got {self.steps}, {self.warmup}")
        if self.canvas < 1 or self.channels not in (1, 3):
            raise InputError(
                f"need canvas >= 1 and 1 or 3 channels: {self.canvas}, {self.channels}"
            )


@dataclass(frozen=True)
class BenchCase:
    """One row of the benchmark.

    Attributes:
        name: row label (the mode, or the variant's name).
        kind: ``model``, ``reference``, ``pipeline`` or ``end2end``.
        overrides: every ``key=value`` override applied to the defaults, in order.
        config: the resolved configuration.
    """

    name: str
    kind: str
    overrides: tuple[str, ...]
    config: Config


def parse_modes(text: str) -> list[str]:
    """Comma-separated modes, checked against :data:`MODES`."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise InputError(f"unknown mode(s) {unknown or text!r}; choose from {', '.join(MODES)}")
    return modes


def parse_variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME:key=value[,key=value...]`` -> ``(NAME, overrides)``."""
    name, sep, rest = text.partition(":")
    overrides = tuple(o.strip() for o in rest.split(",") if o.strip())
    if not sep or not name.strip() or not overrides or any("=" not in o for o in overrides):
        raise InputError(
            f"variant {text!r} must look like NAME:key=value[,key=value...], e.g. "
            "pairs16:loss.terms.patch.pairs_per_view=16"
        )
    return name.strip(), overrides


def make_cases(
    modes: Sequence[str],
    overrides: Sequence[str] = (),
    variants: Sequence[tuple[str, Sequence[str]]] = (),
) -> list[BenchCase]:
    """Cases of ``modes`` (then the variants after ``patch``) with the common ``overrides``.

    Raises:
        InputError: on an unknown mode or a duplicate row name.
        ConfigError: on an invalid override.
    """
    names = [*modes]
    extra = {name: tuple(o) for name, o in variants}
    position = names.index("patch") + 1 if "patch" in names else len(names)
    names[position:position] = list(extra)
    if len(set(names)) != len(names):
        raise InputError(f"row names must be unique, got {names}")
    cases = []
    for name in names:
        if name in extra:
            kind, own = "model", extra[name]
        elif name in _MODE_KIND:
            kind, own = _MODE_KIND[name], _MODE_OVERRIDES.get(name, ())
        else:
            raise InputError(f"unknown mode {name!r}; choose from {', '.join(MODES)}")
        every = (*overrides, *own)
        cases.append(
            BenchCase(
                name,
                kind,
                every,
                load_config(None, every, [backbone.config_problems, kernel.config_problems]),
            )
        )
    return cases
