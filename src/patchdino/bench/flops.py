"""Model FLOPs of a training step and the model FLOPs utilisation (MFU) they give.

The FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` over one step: every
matrix product, convolution and attention PyTorch dispatches, forward and backward (the
factored loss's products included, since they run as PyTorch operations). Work inside Triton
kernels (``loss.kernel=triton``) is not dispatched and so not counted: for such a row the
count, and its MFU, leave the loss out. MFU is the counted FLOPs per second over the device's
dense bf16 peak, reported for bf16 steps on the GPUs of :data:`PEAK_BF16_FLOPS` only. Rows
with ``--compile`` are not counted (the counter would see the compiled graphs' operations
differently).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode

PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
"""Dense bf16 tensor-core peak (FLOP/s) by the card's name as CUDA reports it (a substring)."""


def count_flops(run: Callable[[], object]) -> float:
    """FLOPs that one call of ``run`` dispatches (see the module docstring)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return float(counter.get_total_flops())


def peak_flops(device_name: str, precision: str) -> float | None:
    """The dense peak of ``device_name`` at ``precision`` (``bf16``), None if not known."""
    if precision != "bf16":
        return None
    for card, peak in PEAK_BF16_FLOPS.items():
        if card in device_name:
            return peak
    return None
