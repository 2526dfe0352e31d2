"""Checkpoints that survive crashes, full disks, damaged files and hostile files.

Saving writes a temporary file in the destination folder, flushes and fsyncs it, then renames
it over the old checkpoint: at every moment the folder holds a complete checkpoint (the old or
the new one). Loading uses ``torch.load(weights_only=True)``, which refuses pickles that would
construct arbitrary objects or run code.

Every save also records the file's SHA-256 and step in ``checkpoints.json`` beside it (the
*manifest*, itself replaced atomically), and older checkpoints can be kept
(``keep``: ``checkpoint-step0000020.pt`` beside ``checkpoint.pt``, hard links where the file
system has them). A checkpoint whose folder has a manifest loads only if its SHA-256 is one
the manifest records, so a truncated, emptied or bit-flipped file is refused, and the error
names the older checkpoints that still verify. The manifest is written before the rename and
records the hash the file had before it too, so a process killed between the two leaves a
folder that still verifies. A folder without a manifest (written by an earlier version) loads
without the check.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from patchdino.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
"""File name of the checkpoint inside a run folder."""
CHECKPOINT_FORMAT = "patchdino-pretrain-v1"
"""The ``format`` entry of a pretraining checkpoint, checked by everything that reads one."""
MANIFEST_NAME = "checkpoints.json"
"""File beside the checkpoints recording each one's SHA-256 and step."""
MANIFEST_FORMAT = "patchdino-checkpoints-v1"


def save_checkpoint(
    state: dict[str, Any], path: str | Path, step: int | None = None, keep: int = 1
) -> None:
    """Atomically write ``state`` to ``path`` and record its SHA-256 in the manifest.

    Temporary files left next to ``path`` by a process killed while saving are removed first.

    Args:
        state: what to save (tensors and plain containers).
        path: the checkpoint file, e.g. ``runs/x/checkpoint.pt``.
        step: the step it holds, recorded in the manifest and in the names of kept files.
        keep: checkpoints to keep, this one included: with ``keep > 1`` the one ``path`` held
            stays as ``<stem>-step<step><suffix>`` and only the ``keep - 1`` newest such files
            are kept.

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
        files = _read_manifest(path.parent)
        previous = files.get(path.name)
        if keep > 1 and previous is not None and path.exists():
            _keep_copy(path, previous, files)
        files[path.name] = {"sha256": file_sha256(tmp), "step": step}
        if previous is None and path.exists():  # written by a version without the manifest
            previous = {"sha256": file_sha256(path), "step": None}
        if previous is not None:  # what the file still holds until the rename below
            files[path.name]["replaces"] = {"sha256": previous["sha256"], "step": previous["step"]}
        _write_manifest(path.parent, files)
        os.replace(tmp, path)
        files[path.name].pop("replaces", None)
        _prune(path, files, keep)
        _write_manifest(path.parent, files)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        kept = f"; the previous checkpoint {path} is intact" if path.exists() else ""
        raise CheckpointError(f"could not save checkpoint {path}: {reason}{kept}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def kept_name(path: Path, step: int | None) -> str:
    """Name of the kept copy of the checkpoint ``path`` held at ``step``."""
    return f"{path.stem}-step{step or 0:07d}{path.suffix}"


def _keep_copy(path: Path, record: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    """Keep what ``path`` holds under its step's name (a hard link, else a copy)."""
    kept = path.with_name(kept_name(path, record.get("step")))
    if not kept.exists():
        try:
            os.link(path, kept)
        except OSError:
            shutil.copy2(path, kept)
    files[kept.name] = {"sha256": record["sha256"], "step": record.get("step")}


def _prune(path: Path, files: dict[str, dict[str, Any]], keep: int) -> None:
    """Remove the oldest kept copies of ``path`` beyond the ``keep - 1`` newest."""
    prefix, suffix = f"{path.stem}-step", path.suffix
    kept = [n for n in files if n.startswith(prefix) and n.endswith(suffix)]
    kept.sort(key=lambda n: files[n].get("step") or 0, reverse=True)
    for name in kept[max(keep - 1, 0) :]:
        (path.parent / name).unlink(missing_ok=True)
        del files[name]


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest's records by file name; empty when there is none or it is unreadable."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _write_manifest(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    with tmp.open("w") as handle:
        json.dump({"format": MANIFEST_FORMAT, "files": files}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST_NAME)


def verify_checkpoint(path: Path) -> int | None:
    """Check ``path`` against the manifest of its folder; the step it holds.

    Returns:
        The recorded step, or None when the folder has no manifest (nothing to check).

    Raises:
        CheckpointError: the folder has a manifest and the file's SHA-256 is not one it
            records; the message names the older checkpoints that verify.
    """
    files = _read_manifest(path.parent)
    if not files:
        return None
    digest = file_sha256(path)
    for record in files.values():
        for candidate in (record, record.get("replaces") or {}):
            if candidate.get("sha256") == digest:
                step = candidate.get("step")
                return int(step) if step is not None else None
    raise CheckpointError(
        f"checkpoint {path} is damaged: its SHA-256 is not the one recorded in "
        f"{path.parent / MANIFEST_NAME} when it was saved{_older_note(path, files)}"
    )


def _older_note(path: Path, files: dict[str, dict[str, Any]]) -> str:
    """``"; ... resume from step 20: cp A B"`` for the newest other file that verifies."""
    others = [n for n in files if n != path.name and (path.parent / n).is_file()]
    for name in sorted(others, key=lambda n: files[n].get("step") or 0, reverse=True):
        candidate = path.parent / name
        if file_sha256(candidate) == files[name].get("sha256"):
            step = files[name].get("step")
            return f"; {candidate} (step {step}) verifies: to resume from it, cp {candidate} {path}"
    return "; no older checkpoint of this folder verifies"


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


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    allowed: Sequence[type] = (),
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, verified against its folder's manifest.

    Args:
        path: the file.
        map_location: where its tensors go.
        allowed: classes the restricted unpickler may build besides tensors and plain
            containers (``argparse.Namespace`` for the ``args`` of the field's training
            checkpoints); nothing else is ever unpickled.

    Raises:
        CheckpointError: the file is missing, truncated, does not match the SHA-256 the
            manifest records (:func:`verify_checkpoint`), or holds objects other than tensors
            and plain containers (a file crafted to run code when unpickled is refused before
            anything in it runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    verify_checkpoint(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
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
