"""Fashion-MNIST garment masks: the ground truth of its segmentation task and of the Moving
Fashion videos.

Fashion-MNIST images show one garment on a black background; the pixels brighter than
:data:`GARMENT_THRESHOLD` are the garment, labelled with its image's class + 1, the rest is
background (0).
"""

from __future__ import annotations

import torch
from torch import Tensor

GARMENT_THRESHOLD = 10
"""Fashion-MNIST pixels brighter than this (of 255) belong to the garment."""


def garment_mask(image: Tensor, label: int) -> Tensor:
    """``(H, W)`` long mask of one Fashion-MNIST image: ``label + 1`` on pixels brighter than
    :data:`GARMENT_THRESHOLD`, 0 elsewhere.

    Args:
        image: ``(H, W)`` uint8 image.
        label: its class in ``[0, 10)``.
    """
    return torch.where(image > GARMENT_THRESHOLD, label + 1, 0).long()
