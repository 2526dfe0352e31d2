"""Per-sample geometry of one augmented view.

A view is a crop box of the source image, resized to a square of ``size`` pixels and optionally
flipped horizontally. With patch size ``p`` the view has ``n = size // p`` patches per side;
patch ``(r, c)`` is patch index ``r * n + c`` (CLS excluded) and token ``1 + r * n + c``.

The box and flip flag are kept per sample, as tensors, so that the geometry of a whole batch can
be sampled, resampled and matched on any device without a Python loop over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ViewGeometry:
    """Geometry of one view for a batch of ``B`` samples.

    Attributes:
        boxes: ``(B, 4)`` float tensor ``[top, left, height, width]`` in source-image pixels.
            Pixel ``(y, x)`` of the source covers ``[y, y + 1) x [x, x + 1)``; the box covers
            rows ``top .. top + height`` and columns ``left .. left + width``.
        flipped: ``(B,)`` bool tensor, True where the view is mirrored left-right after resizing.
        size: output side of the (square) view in pixels.
        patch_size: ViT patch side in pixels; must divide ``size``.
    """

    boxes: Tensor
    flipped: Tensor
    size: int
    patch_size: int

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[-1] != 4:
            raise ValueError(f"boxes must have shape (B, 4), got {tuple(self.boxes.shape)}")
        if self.flipped.shape != self.boxes.shape[:1]:
            raise ValueError(
                f"flipped must have shape ({self.boxes.shape[0]},), got {tuple(self.flipped.shape)}"
            )
        if self.patch_size <= 0 or self.size % self.patch_size != 0:
            raise ValueError(
                f"view size {self.size} is not divisible by patch size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Patches per side, ``n = size // patch_size``."""
        return self.size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patch tokens per view, ``n * n``."""
        return self.grid * self.grid

    @property
    def batch_size(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> ViewGeometry:
        """Copy of this geometry on ``device``."""
        return ViewGeometry(
            self.boxes.to(device), self.flipped.to(device), self.size, self.patch_size
        )

    def select(self, index: int) -> ViewGeometry:
        """Geometry of sample ``index`` alone, as a batch of one."""
        return ViewGeometry(
            self.boxes[index : index + 1],
            self.flipped[index : index + 1],
            self.size,
            self.patch_size,
        )
