"""What ``patchdino retrieve`` and ``patchdino copydetect`` offer on the command line,
importable without torch (:mod:`patchdino.eval.common.options` says why)."""

from __future__ import annotations

from dataclasses import dataclass

DESCRIPTORS = ("cls", "gem", "both")
"""Image descriptors of retrieval and copy detection: the CLS token, GeM-pooled patch
tokens, or both concatenated (CLS first)."""
GEM_POWER = 4.0
"""Exponent of the generalised mean (DINO's copy-detection setting)."""


@dataclass(frozen=True)
class CopySettings:
    """Ranges and chances of the copy transforms.

    Attributes:
        area: range of the share of the original's area that the crop keeps.
        angle: largest rotation in degrees, either way.
        scale: range of the final resize factor of each side.
        quality: range of the JPEG quality (inclusive).
        p_rotate: chance of a rotation.
        p_flip: chance of a horizontal flip.
        p_jitter: chance of colour jitter (brightness, contrast, saturation each x0.6-1.4).
        p_gray: chance of grayscale (colour images only).
        p_blur: chance of a Gaussian blur (sigma 0.5-2% of the longer side, at least 0.3 px).
        p_overlay: chance of pasting a patch of another image over 5-20% of the copy.
    """

    area: tuple[float, float] = (0.1, 0.5)
    angle: float = 30.0
    scale: tuple[float, float] = (0.5, 1.5)
    quality: tuple[int, int] = (10, 50)
    p_rotate: float = 0.5
    p_flip: float = 0.5
    p_jitter: float = 0.5
    p_gray: float = 0.2
    p_blur: float = 0.5
    p_overlay: float = 0.5
