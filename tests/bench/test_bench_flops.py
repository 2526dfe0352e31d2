"""Counted model FLOPs and MFU of bench rows."""

from __future__ import annotations

import pytest
import torch

from patchdino.bench.flops import count_flops, peak_flops
from patchdino.bench.results import BenchRow


def test_a_matrix_product_forward_and_backward_is_counted() -> None:
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)

    def step() -> None:
        (x @ w).sum().backward()

    # forward 2*4*8*16; backward two products of the same size
    assert count_flops(step) == 3 * 2 * 4 * 8 * 16


def test_the_peak_is_known_for_bf16_on_listed_cards_only() -> None:
    assert peak_flops("NVIDIA H200", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H200", "fp32") is None
    assert peak_flops("cpu", "bf16") is None


def test_mfu_is_counted_flops_per_second_over_the_peak() -> None:
    row = BenchRow("patch", "model", [], 128, step_seconds=[0.5, 0.25, 1.0])
    assert row.mfu is None and row.tflops_per_s is None
    row.flops_per_step = 2e14  # at the median 0.5 s: 400 TFLOP/s
    assert row.tflops_per_s == pytest.approx(400.0)
    assert row.mfu is None  # peak unknown
    row.peak_flops = 1e15
    assert row.mfu == pytest.approx(0.4)
    assert row.to_dict()["mfu"] == pytest.approx(0.4)
