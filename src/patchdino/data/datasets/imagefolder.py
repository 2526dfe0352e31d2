"""Folders of image files: class sub-folders (ImageFolder layout) or a flat, unlabelled folder."""

from __future__ import annotations

import logging
from pathlib import Path

from patchdino.data.datasets.file_dataset import ImageFileDataset
from patchdino.data.datasets.files import (
    IMG_EXTENSIONS,
    is_image_file,
    iter_image_files,
    resolve_split_dir,
    subfolders,
)

logger = logging.getLogger("patchdino.data")


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
