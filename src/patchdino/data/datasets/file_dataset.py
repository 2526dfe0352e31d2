"""Data sets of image files decoded by DataLoader workers, with a policy for bad files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from patchdino.data.datasets.bad_images import BadImageError, BadImageLog, check_policy
from patchdino.data.datasets.base import CanvasDataset, CanvasItem
from patchdino.data.datasets.canvas import pad_to_canvas
from patchdino.data.datasets.decode import decode_image


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
                    raise
                self.bad_images.mark(i, error.reason)
                continue
            canvas_image, size = pad_to_canvas(image, self.canvas)
            return canvas_image, size, int(self.labels[i])
        raise ValueError(
            f"none of the {n} images of this data set can be read, e.g. {self.paths[0]}"
        )

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
