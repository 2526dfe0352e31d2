"""The per-step input pipeline on the device: canvas batch -> views -> matching and pair plan.

Source images are synthetic uint8 noise on a square canvas, already on the device (decoding
and host-to-device copies are not part of this measurement); their cost per pixel is the
same as for real images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from patchdino.config import Config
from patchdino.data.batch import MultiCropBatch
from patchdino.data.datasets import normalisation
from patchdino.train.build import build_augmentation

Planner = Callable[[MultiCropBatch, torch.Generator | None], Any]
"""``plan(batch, generator)`` of a step module."""


def synthetic_canvas(
    batch_size: int, channels: int, canvas: int, device: torch.device, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Random uint8 images filling the whole canvas.

    Returns:
        ``(B, C, canvas, canvas)`` uint8 images and ``(B, 2)`` long ``(height, width)`` sizes.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    images = torch.randint(
        0,
        256,
        (batch_size, channels, canvas, canvas),
        dtype=torch.uint8,
        device=device,
        generator=generator,
    )
    sizes = torch.full((batch_size, 2), canvas, dtype=torch.long, device=device)
    return images, sizes


class InputPipeline:
    """Multi-crop views of ``config.views`` and the pair plan of one step.

    Args:
        config: the views (``config.views``) and normalisation (ImageNet statistics).
        channels: image channels.
        planner: the step module's ``plan``.
        device: where the generators live (the images' device).
    """

    def __init__(
        self, config: Config, channels: int, planner: Planner, device: torch.device
    ) -> None:
        mean, std = normalisation(config, "imagenet", channels)
        self.augment = build_augmentation(config, mean, std)
        self.planner = planner
        self.device = device
        self.seed = config.run.seed

    def __call__(self, images: Tensor, sizes: Tensor, step: int) -> tuple[MultiCropBatch, Any]:
        """Views and plan of step ``step`` (its own seeded generator)."""
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + step)
        batch = self.augment(images, sizes, generator=generator)
        return batch, self.planner(batch, generator)
