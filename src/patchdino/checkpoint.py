"""Checkpoints that survive crashes, full disks and hostile files.

Saving writes a temporary file in the destination folder, flushes and fsyncs it, then renames
it over the old checkpoint: at every moment the folder holds a complete checkpoint (the old or
the new one). Loading uses ``torch.load(weights_only=True)``, which refuses pickles that would
construct arbitrary objects or run code.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
"""File name of the checkpoint inside a run folder."""
CHECKPOINT_FORMAT = "patchdino-pretrain-v1"
"""The ``format`` entry of a pretraining checkpoint, checked by everything that reads one."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says why."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write ``state`` to ``path``.

    Temporary files left next to ``path`` by a process killed while saving are removed first.

    Raises:
        CheckpointError: the write failed (for example, the disk is full). The previous
            checkpoint at ``path``, if any, is left intact and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        kept = f"; the previous checkpoint {path} is intact" if path.exists() else ""
        raise CheckpointError(f"could not save checkpoint {path}: {reason}{kept}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, or holds objects other than tensors
            and plain containers (a file crafted to run code when unpickled is refused before
            anything in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unpickling_error(path, err) from err
    except (RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip() or f"{type(err).__name__}: the file is empty or cut short"
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a patchdino checkpoint (top level is not a dict)")
    return state


def _unpickling_error(path: Path, err: pickle.UnpicklingError) -> CheckpointError:
    """A short message for what the restricted unpickler refused (its own text is long)."""
    text = str(err)
    imported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if imported:
        return CheckpointError(
            f"refusing to load {path}: it would import and call {imported.group(1)} when "
            "unpickled, and a checkpoint holds only tensors and plain containers; only load "
            "checkpoints you trust"
        )
    detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
    reason = detail[0].strip() if detail else (text.strip().splitlines() or ["unknown"])[0]
    return CheckpointError(
        f"cannot read checkpoint {path}: it is not a PyTorch file of tensors and plain "
        f"containers ({reason}); only load checkpoints you trust"
    )
