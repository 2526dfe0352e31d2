"""Which implementation computes each distillation problem (``loss.kernel``).

All compute the same loss and gradients (docs/method.md section 4); they differ in speed and
memory:

- ``"torch"``: the factored form in PyTorch (:mod:`patchdino.losses.factored`): one pass over
  ``K``-wide rows per side, with ``d``-wide teacher targets.
- ``"chunked"``: each student row's ``K``-wide target built from its teachers'
  probabilities, then a chunked soft cross-entropy
  (:mod:`patchdino.losses.cross_entropy`); the form the factored one is tested against.
- ``"triton"``: the factored form in fused Triton kernels (:mod:`patchdino.losses.triton_distill`)
  that never write a ``K``-wide row to memory; CUDA (or Triton's interpreter, for tests).
- ``"auto"``: ``"torch"``, until the compiled Triton kernels have passed the CUDA tests and
  the GPU bench (docs/performance.md); then ``"triton"`` on a CUDA device where Triton
  imports (:data:`TRITON_FOR_AUTO`).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from patchdino.config.checks import literal_values
from patchdino.config.loss import LossKernel
from patchdino.config.schema import Config

KERNELS: tuple[str, ...] = literal_values(LossKernel) or ()
"""``loss.kernel`` values."""

TRITON_FOR_AUTO = False
"""Whether ``auto`` picks ``triton`` on CUDA. False while the kernels are verified only in
Triton's CPU interpreter: a CUDA run then gets the factored form in PyTorch, whose operations
are those of the GPU-tested chunked form."""


@functools.cache
def triton_importable() -> bool:
    """Whether the ``triton`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def kernel_problem(kernel: str, device: torch.device | str) -> str | None:
    """Why ``loss.kernel=kernel`` cannot run on ``device``, or None if it can."""
    if kernel not in KERNELS:
        return f"loss.kernel must be one of {', '.join(KERNELS)}, got {kernel!r}"
    if kernel != "triton":
        return None
    if not triton_importable():
        return "loss.kernel=triton needs the triton package, which is not installed"
    if torch.device(device).type != "cuda" and not triton_interpreted():
        return (
            f"loss.kernel=triton needs a CUDA device (this run uses {torch.device(device)}); "
            "use loss.kernel=auto or torch"
        )
    return None


def resolve_kernel(kernel: str, device: torch.device | str) -> str:
    """The implementation ``kernel`` stands for on ``device``: ``"torch"``, ``"chunked"`` or
    ``"triton"``.

    Raises:
        ValueError: the kernel cannot run there (:func:`kernel_problem`).
    """
    problem = kernel_problem(kernel, device)
    if problem is not None:
        raise ValueError(problem)
    if kernel != "auto":
        return kernel
    on_cuda = torch.device(device).type == "cuda"
    return "triton" if TRITON_FOR_AUTO and on_cuda and triton_importable() else "torch"


def config_problems(config: Config) -> list[str]:
    """Problems of ``loss.kernel`` on ``run.device`` for :func:`~patchdino.config.load_config`'s
    ``checks`` (``auto`` resolves to CUDA when a device is visible)."""
    device = config.run.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    problem = kernel_problem(config.loss.kernel, device.split(":")[0])
    return [problem] if problem else []
