"""torch.distributed set-up for torchrun launches; a plain process stays single-process.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; when they
are present the process group is initialised with NCCL on CUDA and gloo on CPU, and each
process takes the GPU of its local rank. Every collective here is skipped when no process
group is initialised, so a plain process never communicates.
"""

from __future__ import annotations

import datetime
import inspect
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from patchdino.errors import InputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """``nccl`` or ``gloo`` when a process group was joined; None for a plain process."""

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, metrics, figures and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device, timeout: float = 600.0) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    Args:
        device: this process's device; CUDA selects NCCL, CPU gloo.
        timeout: seconds a collective waits for the other processes before it fails
            (``run.dist_timeout``; :func:`peer_failure` names such a failure).

    Raises:
        InputError: launched by torchrun, but this PyTorch has no torch.distributed.
    """
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_available():
        raise InputError(
            "launched by torchrun (RANK and WORLD_SIZE are set) but this PyTorch build has no "
            "torch.distributed support; run a single process with plain `patchdino pretrain`"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            store=_attempt_store(rank, world),
            rank=rank,
            world_size=world,
            device_id=device if device.type == "cuda" else None,
            timeout=datetime.timedelta(seconds=timeout),
        )
    return DistributedContext(rank, world, local_rank, str(dist.get_backend()))


def _attempt_store(rank: int, world: int) -> dist.Store:
    """The job's key-value store (``env://``: torchrun's), its keys prefixed by the attempt.

    After ``torchrun --max-restarts`` restarts a worker group, the store can still hold the
    keys the previous attempt's processes wrote, among them the addresses at which gloo
    listened; a new process that reads one of those connects to a dead peer ("Connection
    refused") and the restart fails. Keys under ``attempt_<TORCHELASTIC_RESTART_COUNT>/`` are
    written anew by every attempt.
    """
    store, _, _ = next(dist.rendezvous("env://", rank, world))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"patchdino/attempt_{attempt}/", store)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device called ``name`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), checked to exist.

    ``auto`` is ``cuda`` when a GPU is available and the CPU otherwise; ``cuda`` is the GPU of
    ``local_rank`` (this process's ``LOCAL_RANK`` under torchrun, else 0).

    Raises:
        InputError: an unknown name, CUDA asked for but absent, ``cuda:N`` beyond this
            machine's GPUs, a local rank without a GPU of its own, or several processes of one
            node pinned to the same ``cuda:N``.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise InputError(f"device {name}: no CUDA device is available")
    count = torch.cuda.device_count()
    if name == "cuda":
        if local_rank >= count:
            raise InputError(
                f"local rank {local_rank} has no GPU: this node has {count}; launch at most "
                f"{count} processes per node (torchrun --nproc_per_node={count})"
            )
        return torch.device("cuda", local_rank)
    device = torch.device(name)
    if device.index is not None and device.index >= count:
        raise InputError(f"device {name}: this machine has {count} CUDA device(s)")
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise InputError(
            f"device {name} would put every process of this node on one GPU; use cuda (or "
            "auto) under torchrun, each process then takes the GPU of its LOCAL_RANK"
        )
    return device


def wrap_model(
    module: nn.Module, device: torch.device, find_unused_parameters: bool = False
) -> nn.Module:
    """``module`` in :class:`DistributedDataParallel`, which averages gradients over ranks.

    Buffers (the loss centre, kept equal on every rank by its own all-reduce) are synchronised
    once at the start and not before every forward pass.

    Args:
        module: the module whose forward computes the loss (every trainable parameter used in
            the loss must be reached through it).
        device: this process's device; a CUDA device is passed to DDP as ``device_ids``.
        find_unused_parameters: search the autograd graph after every forward pass for
            parameters that get no gradient (needed only when some never do; costs a graph
            traversal per step).
    """
    options: dict[str, object] = {"find_unused_parameters": find_unused_parameters}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        **options,  # type: ignore[arg-type]
    )


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


_COLLECTIVE = re.compile(r"gloo|nccl|collective|for (recv|send) operation", re.IGNORECASE)
_PEER_GONE = re.compile(r"timed out|timeout|closed|reset by peer|refused|abort", re.IGNORECASE)
_PAIR_CLOSED = re.compile(r"timeout caused pair closure", re.IGNORECASE)
"""gloo's message for a collective on a connection that an earlier collective's timeout
closed (e.g. DDP's gradient reduction after the centre's asynchronous all-reduce timed out),
which names neither gloo nor the collective."""


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process of the job did not
    take part (hung past ``run.dist_timeout``, or dead); only under an initialised group."""
    if not (dist.is_available() and dist.is_initialized()) or not isinstance(err, RuntimeError):
        return False
    text = str(err)
    return bool(_COLLECTIVE.search(text) and _PEER_GONE.search(text)) or bool(
        _PAIR_CLOSED.search(text)
    )
