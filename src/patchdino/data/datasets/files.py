"""Data sets of image files: class sub-folders (ImageFolder layout) or a flat folder.

Files are found on disk here and decoded later, one item at a time, by DataLoader workers; an
unreadable file is skipped or reported according to the data set's policy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from patchdino.data.datasets.bad_images import BadImageError, BadImageLog, check_policy
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.canvas import decode_image, pad_to_canvas

logger = logging.getLogger("patchdino.data")

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


class ImageFileDataset(CanvasDataset):
    """Images read from files, one ``(path, label)`` sample per item.

    With ``on_bad_image="skip"`` an unreadable file is replaced by the next readable item
    (wrapping around) and recorded in ``bad_images``; with ``"fail"`` it raises a
    :class:`BadImageError` (a ValueError) naming the file.

    Args:
        samples: ``(path, label)`` per item, label -1 when unlabelled.
        classes: class names indexed by label, or None when unlabelled.
        canvas: side of the square canvas, or None to keep native sizes.
        channels: 3 (RGB, grayscale replicated) or 1 (luminance); None means 3.
        on_bad_image: "skip" or "fail".
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: list[str] | None,
        canvas: int | None,
        channels: int | None = None,
        on_bad_image: str = "skip",
    ) -> None:
        channels = 3 if channels is None else channels
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {channels}")
        self.paths = [Path(p) for p, _ in samples]
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)  # (N,)
        self.classes = classes
        self.canvas = canvas
        self.channels = channels
        self.on_bad_image = check_policy(on_bad_image)
        self.bad_images = BadImageLog(self.paths)

    def __getitem__(self, index: int) -> CanvasItem:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} images")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if self.bad_images.is_bad(i):
                continue
            try:
                image = decode_image(self.paths[i], self.channels, self.canvas)
            except BadImageError as error:
                if self.on_bad_image == "fail":
                    self.bad_images.record_failure(i, error.reason)  # seen past a worker
                    raise
                self.bad_images.mark(i, error.reason)
                continue
            canvas_image, size = pad_to_canvas(image, self.canvas)
            return canvas_image, size, int(self.labels[i])
        raise ValueError(
            f"none of the {n} images of this data set can be read, e.g. {self.paths[0]}"
        )

    def item_names(self) -> list[str]:
        """Path of every file relative to the split folder ``root`` (its name without one)."""
        root = getattr(self, "root", None)
        if root is None:
            return [p.name for p in self.paths]
        return [p.relative_to(root).as_posix() for p in self.paths]

    def check_images(self) -> list[Path]:
        """Decode every image once (small, to save time) and return the unreadable files.

        With ``on_bad_image="fail"`` the first bad file raises instead.
        """
        for i, path in enumerate(self.paths):
            if self.bad_images.is_bad(i):
                continue
            try:
                decode_image(path, self.channels, 8)
            except BadImageError as error:
                if self.on_bad_image == "fail":
                    raise
                self.bad_images.mark(i, error.reason)
        return self.bad_images.paths


def _no_images_error(folder: Path) -> ValueError:
    return ValueError(
        f"no image files found in {folder}; expected files ending in {', '.join(IMG_EXTENSIONS)}"
    )


def find_classes(folder: Path) -> list[str]:
    """Sorted names of the class sub-folders of ``folder`` (hidden ones skipped).

    Raises:
        ValueError: ``folder`` has no sub-folders, or some of them hold no image.
    """
    dirs = subfolders(folder)
    if not dirs:
        if any(is_image_file(p) for p in folder.iterdir()):
            raise ValueError(
                f"{folder} holds images but no class sub-folders; load it with kind='flat' "
                "for unlabelled training"
            )
        raise _no_images_error(folder)
    empty = [d.name for d in dirs if next(iter_image_files(d), None) is None]
    if empty:
        raise ValueError(
            f"class folders without any image file in {folder}: {', '.join(empty[:10])}"
            f"{' ...' if len(empty) > 10 else ''}; remove them or add images"
        )
    return [d.name for d in dirs]


class ImageFolderDataset(ImageFileDataset):
    """Images in class sub-folders; labels are indices of the sorted class names.

    ``root`` is either the class-folder root (the train split) or a folder holding
    ``train/`` and ``val/`` (or ``test/``) class-folder roots. Images are found at any depth
    inside each class folder; top-level files of the root are ignored.

    Args:
        root: data set folder.
        split: "train", "val" or "test".
        canvas: side of the square canvas, or None to keep native sizes.
        channels: 3 (default) or 1.
        on_bad_image: "skip" or "fail" for unreadable files.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        canvas: int | None = 256,
        channels: int | None = None,
        on_bad_image: str = "skip",
    ) -> None:
        self.root = resolve_split_dir(Path(root), split)
        classes = find_classes(self.root)
        samples = [
            (path, label)
            for label, name in enumerate(classes)
            for path in iter_image_files(self.root / name)
        ]
        loose = sum(1 for p in self.root.iterdir() if p.is_file() and is_image_file(p))
        if loose:
            logger.warning(
                "ignoring %d image files at the top of %s (not in a class folder)", loose, self.root
            )
        super().__init__(samples, classes, canvas, channels, on_bad_image)


class FlatFolderDataset(ImageFileDataset):
    """Every image under a folder (any depth), unlabelled (label -1).

    Args:
        root: data set folder; with ``train/`` and ``val/`` sub-folders the split picks one.
        split: "train", "val" or "test".
        canvas: side of the square canvas, or None to keep native sizes.
        channels: 3 (default) or 1.
        on_bad_image: "skip" or "fail" for unreadable files.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        canvas: int | None = 256,
        channels: int | None = None,
        on_bad_image: str = "skip",
    ) -> None:
        self.root = resolve_split_dir(Path(root), split)
        paths = list(iter_image_files(self.root))
        if not paths:
            raise _no_images_error(self.root)
        super().__init__([(p, -1) for p in paths], None, canvas, channels, on_bad_image)
