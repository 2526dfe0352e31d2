"""The bf16-or-not decision of the training step."""

from __future__ import annotations

import contextlib

import pytest
import torch

from patchdino.precision import PRECISIONS, autocast_for, effective_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("auto", CPU, "fp32"),
        ("auto", CUDA, "bf16"),
        ("fp32", CUDA, "fp32"),
        ("bf16", CPU, "bf16"),
        ("bf16", CUDA, "bf16"),
    ],
)
def test_effective_precision(precision: str, device: torch.device, expected: str) -> None:
    assert effective_precision(precision, device) == expected


def test_autocast_only_where_bf16_applies() -> None:
    assert isinstance(autocast_for("fp32", CPU), contextlib.nullcontext)
    assert isinstance(autocast_for("auto", CPU), contextlib.nullcontext)
    with autocast_for("bf16", CPU):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == torch.bfloat16


def test_unknown_precision_is_named() -> None:
    assert PRECISIONS == ("auto", "fp32", "bf16")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        effective_precision("fp16", CPU)
