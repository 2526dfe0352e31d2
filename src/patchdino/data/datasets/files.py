"""Finding image files and split folders on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

SPLITS = ("train", "val", "test")
# Folder names tried for each split, in order.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image extension (case-insensitive) and is not hidden."""
    return path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith(".")


def iter_image_files(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` at any depth, in sorted order, hidden entries skipped."""
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(directory) / name
            if is_image_file(path):
                yield path


def has_image_file(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file at any depth."""
    return next(iter_image_files(folder), None) is not None


def subfolders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_split_layout(root: Path) -> bool:
    """Whether ``root`` holds a ``train/`` folder and a ``val/`` or ``test/`` folder."""
    return (root / "train").is_dir() and any((root / n).is_dir() for n in ("val", "test"))


def resolve_split_dir(root: Path, split: str) -> Path:
    """The folder holding ``split`` of an image-folder data set.

    A root with ``train/`` and ``val/`` (or ``test/``) sub-folders: the sub-folder of the
    split ("val" and "test" fall back on each other). Any other root is the train split.

    Raises:
        ValueError: unknown split, or a held-out split asked of a root that has none.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        raise ValueError(f"data set folder {root} does not exist or is not a folder")
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    if split == "train" and not (root / "val").is_dir() and not (root / "test").is_dir():
        return root
    raise ValueError(
        f"{root} has no {' or '.join(n + '/' for n in SPLIT_FOLDERS[split])} sub-folder for "
        f"the {split!r} split; a folder without train/ and val/ sub-folders is the train "
        "split only. Point to a folder holding train/ and val/ (or test/)."
    )
