"""torch.distributed set-up for torchrun launches; a plain process stays single-process.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; when they are present the
process group is initialised with NCCL on CUDA and gloo on CPU. Nothing here is called
unconditionally on a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, metrics, figures and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    Args:
        device: this process's device; CUDA selects NCCL, CPU gloo.
    """
    if not launched_by_torchrun():
        return DistributedContext()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
    return DistributedContext(rank, world, local_rank)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks this process's GPU (``LOCAL_RANK`` under torchrun) or the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("run.device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device is {name} but no CUDA device is available")
    return device


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar metrics over all ranks (identity on a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
