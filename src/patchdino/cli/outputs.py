"""Checks of the commands' output paths, made before any computation.

Every command that writes a file or a folder calls :func:`check_output` (a file) or
:func:`check_output_folder` (a folder) first, so that a path it cannot write is reported as
one line with exit code 2 rather than as a traceback once the work is done. Nothing is left
behind by the checks: missing folders are not created, and writability is tested with a
temporary file that is removed at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from patchdino.cli.errors import UsageError


def check_output(path: Path, suffixes: str | Sequence[str], option: str = "--output") -> None:
    """Refuse an output file that cannot be written.

    Args:
        path: the file the command will write.
        suffixes: its allowed suffix (``".json"``) or suffixes (``(".pt", ".npz")``).
        option: the option that gave ``path``, for the message.

    Raises:
        UsageError: another suffix, an existing folder or unwritable file at ``path``, or a
            folder that cannot be created or written in.
    """
    allowed = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    if path.suffix not in allowed:
        raise UsageError(f"{option} must end in {' or '.join(allowed)}, got {path}")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a {' or '.join(allowed)} file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path} exists and is not writable")
    _check_writable_folder(path.parent, path, option)


def check_output_folder(path: Path, option: str = "--output") -> None:
    """Refuse an output folder that is a file or cannot be created or written in.

    Args:
        path: the folder the command will write into (it may not exist yet).
        option: the option that gave ``path``, for the message.

    Raises:
        UsageError: ``path`` is an existing file, or it cannot be created or written in.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file; {option} must be a folder")
    _check_writable_folder(path, path, option)


def _check_writable_folder(folder: Path, given: Path, option: str) -> None:
    """Raise unless ``folder`` exists and is writable, or can be created.

    The nearest existing ancestor of ``folder`` must be a folder where a file can be made.
    """
    existing = folder if str(folder) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {given}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UsageError(f"{option} {given}: cannot write in {existing} ({reason})") from err


def write_json(path: Path, record: dict[str, object]) -> None:
    """Write ``record`` as indented JSON to ``path``, creating its folder."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
