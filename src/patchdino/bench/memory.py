"""Peak memory of one benchmark case, on CUDA or on the CPU.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors
  allocated by PyTorch on that device, model and optimiser state included).
- CPU on Linux: the process's peak resident set size (``VmHWM`` of ``/proc/self/status``),
  reset through ``/proc/self/clear_refs`` at the start of the case, minus the resident size
  at that moment: the growth of the process while the case ran. Memory freed by earlier
  cases is first handed back to the system (glibc ``malloc_trim``), so that a case cannot
  reuse it unseen.
- Elsewhere on the CPU: the growth of ``resource.getrusage``'s ``ru_maxrss`` (the lifetime
  peak, so a case that stays below an earlier case's peak reports 0: a lower bound).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from pathlib import Path

import torch

CUDA_METHOD = "torch.cuda.max_memory_allocated"
RSS_METHOD = "peak RSS growth (malloc_trim, then VmHWM reset via /proc/self/clear_refs)"
RUSAGE_METHOD = "ru_maxrss growth (lifetime peak: a lower bound)"

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or None where unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _release_free_memory() -> None:
    """Return freed heap memory to the system (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        return
    if trim is not None:
        trim(0)


def _max_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


class PeakMemory:
    """Measures the peak memory between :meth:`start` and :meth:`peak_bytes`.

    Args:
        device: the device the case runs on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._baseline = 0
        self.method = CUDA_METHOD if device.type == "cuda" else RUSAGE_METHOD

    def start(self) -> None:
        """Reset the peak; the memory in use now is the baseline (CPU) or counted (CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_free_memory()
        rss = _status_bytes("VmRSS")
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            reset = rss is not None
        except OSError:
            reset = False
        if reset and rss is not None:
            self.method, self._baseline = RSS_METHOD, rss
        else:
            self.method, self._baseline = RUSAGE_METHOD, _max_rss_bytes()

    def peak_bytes(self) -> int:
        """Peak bytes since :meth:`start` (see the module docstring for what is counted)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.method == RSS_METHOD:
            peak = _status_bytes("VmHWM")
            if peak is not None:
                return max(0, peak - self._baseline)
        return max(0, _max_rss_bytes() - self._baseline)
