"""Host synchronisations of a step: the calls that make the CPU wait for the device.

A CUDA step runs ahead of the host until a value has to come back: a scalar read
(``.item()``, ``bool(t)``, ``float(t)``), a copy to host memory (``.tolist()``, ``.cpu()``,
``.numpy()``), or an operation whose output shape depends on the data (``nonzero``,
``masked_select``, ``unique``, boolean indexing, ``repeat_interleave`` without
``output_size``). Each such call drains the device's queue, so their number per step is a cost
the GPU pays and the CPU does not.

:func:`count_host_syncs` counts them over one call of a step on any device, so that the count
can be read, and held, on the CPU too. On CUDA it uses PyTorch's own detector
(``torch.cuda.set_sync_debug_mode``: one warning per synchronising call), which sees every
one; elsewhere a dispatch mode counts the operations above and a wrapper counts the copies
to host memory, which on a CPU tensor do not reach the dispatcher. The CPU count misses syncs
hidden inside a native kernel's own implementation and counts host copies of tensors that a
CUDA run keeps on the host anyway, so it is an estimate of the CUDA count, exact for a step
whose tensors all live on the device.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

DATA_DEPENDENT_OPS = (
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::unique_dim_consecutive",
    "aten::nonzero_static",
)
"""Operations that read device values on the host: the scalar read behind ``.item()``,
``bool()`` and ``float()``, and those whose output shape is data-dependent."""

HOST_RESIDENT = (f"{os.sep}torch{os.sep}optim{os.sep}",)
"""Source folders whose scalar reads touch host tensors on CUDA too, left out of a CPU count:
PyTorch's non-fused optimisers keep each parameter's ``step`` counter on the host and read it
with ``.item()``, which is no sync there."""

HOST_COPIES = ("tolist", "cpu", "numpy")
"""``Tensor`` methods that copy values into host memory (a sync for a CUDA tensor)."""


class _Counting(TorchDispatchMode):
    """Counts :data:`DATA_DEPENDENT_OPS`, boolean-mask indexing and ``repeat_interleave``
    without ``output_size`` by operator name."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = func._schema.name
        if _syncs(name, args, kwargs):
            self.counts[name] += 1
        return func(*args, **kwargs)


def _syncs(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether operator ``name`` called with ``args`` and ``kwargs`` waits for the device."""
    if name == "aten::_local_scalar_dense":
        return not _from_host_resident_code()
    return name in DATA_DEPENDENT_OPS or _masks(name, args) or _unsized_repeat(name, kwargs)


def _from_host_resident_code() -> bool:
    """Whether the Python code that made this call lies in a :data:`HOST_RESIDENT` folder."""
    frame = sys._getframe(2)
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in HOST_RESIDENT):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _masks(name: str, args: tuple[Any, ...]) -> bool:
    """``x[mask]`` or ``x[mask] = v``: an index list holding a boolean tensor."""
    if name not in ("aten::index", "aten::index_put", "aten::index_put_") or len(args) < 2:
        return False
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]
    )


def _unsized_repeat(name: str, kwargs: dict[str, Any]) -> bool:
    return name == "aten::repeat_interleave" and kwargs.get("output_size") is None


@contextlib.contextmanager
def _count_host_copies(counts: Counter[str]) -> Iterator[None]:
    """Count every :data:`HOST_COPIES` call, whatever the tensor's device.

    A CPU run cannot tell which tensors a CUDA run would hold on the host already, so this
    counts an upper bound: a ``.tolist()`` of a tensor that lives on the host on CUDA too is
    counted, where the CUDA detector would not see it.
    """
    originals = {name: getattr(torch.Tensor, name) for name in HOST_COPIES}

    def counting(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counts[f"Tensor.{name}"] += 1
            return method(self, *args, **kwargs)

        return call

    try:
        for name, method in originals.items():
            setattr(torch.Tensor, name, counting(name, method))
        yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def count_host_syncs(run: Callable[[], object], device: torch.device) -> Counter[str]:
    """The host syncs of one call of ``run``, by kind (their sum is the count).

    Args:
        run: one step; on CUDA it is synchronised before and after, so that only its own
            syncs are counted.
        device: where the step runs: CUDA uses PyTorch's detector, other devices the
            dispatch count (module docstring).

    Returns:
        kind -> calls: on CUDA the single kind ``"cuda sync"``; elsewhere operator names
        (``aten::nonzero``...) and ``Tensor.tolist``-style method names.
    """
    counts: Counter[str] = Counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        found = sum("synchronizing CUDA operation" in str(w.message) for w in seen)
        torch.cuda.synchronize(device)
        if found:
            counts["cuda sync"] = found
        return counts
    with _count_host_copies(counts), _Counting(counts):
        run()
    return counts
