"""The evaluation transform of the command line as one callable, for use outside it.

:class:`EvalTransform` turns one image into the normalised tensor that ``patchdino features``,
``knn`` and ``linear`` feed the network, in the same steps:

1. **Canvas** (image files only): the image is converted to the network's channels (16-bit
   images mapped to 8 bits) and resized, bilinear, so that its *longer* side equals the
   canvas, :func:`~patchdino.eval.common.eval_data.file_canvas` (at least 320 px, and room for a 4:3
   image whose shorter side is the next step's target). This is how the data sets decode
   image files; standard DINO preprocessing skips it, so its results differ slightly.
2. **Resize and centre crop** (image files): the shorter side is resized, bicubic and
   antialiased on uint8 pixels, to ``round(S * 256 / 224)``, then the central ``S x S``
   square is kept. In-memory data sets (CIFAR, MNIST-like) instead resize the whole image to
   ``S x S``, without a canvas.
3. **Normalise**: ``(x / 255 - mean) / std`` per channel, with the statistics the weights
   were trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from patchdino.data.datasets.canvas import decode_image, fit_image
from patchdino.errors import InputError
from patchdino.eval.common.eval_data import (
    CROP_RATIO,
    EVAL_MODES,
    Normalise,
    eval_resize,
    file_canvas,
)

ImageInput = Image.Image | str | Path | Tensor | np.ndarray
"""What :class:`EvalTransform` accepts: a PIL image, an image file, or uint8 pixels."""


class EvalTransform:
    """One image to the ``(C, S, S)`` float32 tensor the command line's evaluation makes.

    A torchvision-compatible transform (``datasets.ImageFolder(root, transform=t)``). Given a
    *path*, the file is decoded exactly as the data sets decode it: large JPEG files are then
    read at a reduced DCT scale that still covers the canvas, which an already decoded PIL
    image cannot reproduce (differences of a few grey levels). For results identical to the
    command line on JPEG files, pass paths: ``ImageFolder(root, transform=t, loader=str)``.

    Args:
        image_size: side ``S`` of the output.
        mean: per-channel normalisation mean in ``[0, 1]`` units (``C`` entries).
        std: per-channel standard deviation.
        mode: ``"center_crop"`` (image files, with the canvas step) or ``"resize"``
            (in-memory data sets: the whole image squeezed to ``S x S``).
        canvas: the configured canvas (``data.canvas``); None for the default.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        mode: str = "center_crop",
        canvas: int | None = None,
    ) -> None:
        if mode not in EVAL_MODES:
            raise InputError(f"mode must be one of {', '.join(EVAL_MODES)}, got {mode!r}")
        if image_size < 1:
            raise InputError(f"the image size must be at least 1, got {image_size}")
        if len(mean) not in (1, 3):
            raise InputError(f"mean and std need 1 or 3 entries, got {len(mean)}")
        self.image_size = int(image_size)
        self.mode = mode
        self.channels = len(mean)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.canvas = file_canvas(self.image_size, canvas) if mode == "center_crop" else None
        self.normalise = Normalise(mean, std)

    def __call__(self, image: ImageInput) -> Tensor:
        """One image to the network's input.

        Args:
            image: a PIL image, an image file path, or uint8 pixels ``(C, H, W)`` tensor or
                ``(H, W[, C])`` array.

        Returns:
            ``(C, S, S)`` float32 normalised tensor.
        """
        pixels = self.canvas_image(image)  # (C, h, w) uint8
        size = torch.tensor(pixels.shape[-2:])
        view = eval_resize(pixels, size, self.image_size, self.mode)  # (C, S, S) uint8
        return self.normalise(view[None])[0]

    def canvas_image(self, image: ImageInput) -> Tensor:
        """Step 1: the image converted to ``C`` channels on its canvas, ``(C, h, w)`` uint8.

        ``max(h, w)`` is the canvas in ``"center_crop"`` mode; the native size otherwise.
        """
        if isinstance(image, str | Path):
            return decode_image(Path(image), self.channels, self.canvas)
        if isinstance(image, Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3:
                raise InputError(
                    f"tensor images must be (C, H, W) uint8, got {tuple(image.shape)} {image.dtype}"
                )
            image = image.permute(1, 2, 0).numpy()
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise InputError(f"arrays must be (H, W[, C]) uint8, got {image.shape}")
            image = Image.fromarray(
                image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
            )
        return fit_image(image, self.channels, self.canvas)

    def to_dict(self) -> dict[str, Any]:
        """The transform as plain values (for an export's metadata)."""
        record: dict[str, Any] = {
            "mode": self.mode,
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.mode == "center_crop":
            record |= {
                "canvas": self.canvas,
                "canvas_resize": "longer side to the canvas, bilinear",
                "resize_shorter_side": round(self.image_size / CROP_RATIO),
                "resize": "bicubic, antialiased, on uint8 pixels",
                "center_crop": self.image_size,
            }
        else:
            record["resize"] = "whole image to image_size x image_size, bicubic, antialiased"
        return record

    def __repr__(self) -> str:
        return (
            f"EvalTransform(image_size={self.image_size}, mode={self.mode!r}, "
            f"canvas={self.canvas}, channels={self.channels})"
        )
