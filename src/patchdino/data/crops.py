"""Random crop boxes and flips, drawn per sample (or per group of samples) as tensors.

``sample_crop_boxes`` is a vectorised version of the parameters of torchvision's
``RandomResizedCrop``: for each sample, up to ``attempts`` candidate boxes are drawn with an area
fraction uniform in ``scale`` and a log aspect ratio (width / height) uniform in ``log(ratio)``;
the first candidate that fits the sample's image is kept, at a uniformly random position. When
no candidate fits, the box falls back to a central crop of the whole image, clamped to
``ratio``. All attempts are drawn at once, so a batch is sampled without a loop over samples.

With ``group=g`` every run of ``g`` consecutive samples shares one draw of the random numbers
(area fraction, aspect ratio, position, flip): samples of one image size then get identical
boxes and flips, and samples of other sizes the same box relative to their image.

Random numbers come from an optional ``torch.Generator``. They are drawn on the generator's
device and moved to the device of the data, so a CPU generator also drives CUDA tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from patchdino.config.checks import interval_problem


def uniform(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    """Float32 draws uniform in ``[low, high)``.

    Args:
        shape: shape of the result.
        generator: source of randomness; drawn on its own device. None uses torch's default
            generator of ``device``.
        device: device of the result.
        low: lower bound.
        high: upper bound.

    Returns:
        ``shape`` float32 tensor on ``device``.
    """
    source = generator.device if generator is not None else device
    draws = torch.rand(shape, generator=generator, device=source).to(device)
    return low + (high - low) * draws


def sample_crop_boxes(
    image_sizes: Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    attempts: int = 10,
    group: int = 1,
) -> Tensor:
    """Random resized-crop boxes, one per sample.

    Args:
        image_sizes: ``(B, 2)`` integer tensor ``(height, width)`` of each sample's image (its
            valid region, anchored at the top-left corner of the canvas).
        scale: range of the box area as a fraction of the image area.
        ratio: range of the box aspect ratio, width / height.
        generator: optional source of randomness.
        attempts: candidate boxes drawn per sample before falling back to a central crop.
        group: consecutive samples that share their random draws; must divide ``B``.

    Returns:
        ``(B, 4)`` float32 tensor ``[top, left, height, width]`` with integer values, on the
        device of ``image_sizes``; every box lies inside its sample's image.
    """
    if image_sizes.ndim != 2 or image_sizes.shape[1] != 2:
        raise ValueError(f"image_sizes must have shape (B, 2), got {tuple(image_sizes.shape)}")
    problem = interval_problem("scale", scale, upper=1.0) or interval_problem("ratio", ratio)
    if problem is not None:
        raise ValueError(problem)
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    device = image_sizes.device
    batch = image_sizes.shape[0]
    draws = _draws(batch, group)
    sizes = image_sizes.to(torch.float32)
    height, width = sizes[:, 0:1], sizes[:, 1:2]  # (B, 1) each

    area_fraction = uniform((draws, attempts), generator, device, *scale)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    log_aspect = uniform((draws, attempts), generator, device, *log_ratio)
    target_area = height * width * area_fraction.repeat_interleave(group, dim=0)  # (B, A)
    aspect = torch.exp(log_aspect.repeat_interleave(group, dim=0))
    w = torch.round(torch.sqrt(target_area * aspect))  # (B, A)
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, A)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting attempt
    found = fits.any(dim=1, keepdim=True)  # (B, 1)
    h, w = h.gather(1, first), w.gather(1, first)

    # Fallback: the whole image, cut down to the nearest allowed aspect ratio, centred.
    image_ratio = width / height
    too_tall = image_ratio < ratio[0]
    too_wide = image_ratio > ratio[1]
    fallback_h = torch.where(too_tall, torch.round(width / ratio[0]), height)
    fallback_w = torch.where(too_wide, torch.round(height * ratio[1]), width)
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)

    offsets = uniform((draws, 2), generator, device).repeat_interleave(group, dim=0)  # (B, 2)
    random_top = torch.floor(offsets[:, 0:1] * (height - h + 1)).clamp(max=height - h)
    random_left = torch.floor(offsets[:, 1:2] * (width - w + 1)).clamp(max=width - w)
    top = torch.where(found, random_top, torch.floor((height - h) / 2))
    left = torch.where(found, random_left, torch.floor((width - w) / 2))
    return torch.cat([top, left, h, w], dim=1)


def sample_flips(
    batch_size: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    group: int = 1,
) -> Tensor:
    """Horizontal-flip flags, one per sample.

    Args:
        batch_size: number of samples ``B``.
        p: probability of a flip.
        generator: optional source of randomness.
        device: device of the result (default: the generator's device, else CPU).
        group: consecutive samples that share one flag; must divide ``B``.

    Returns:
        ``(B,)`` bool tensor, True where the view is mirrored.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability must be in [0, 1], got {p}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    draws = _draws(batch_size, group)
    return (uniform((draws,), generator, torch.device(device)) < p).repeat_interleave(group)


def _draws(batch_size: int, group: int) -> int:
    """Number of independent draws for ``batch_size`` samples in groups of ``group``."""
    if group < 1 or batch_size % group:
        raise ValueError(f"group must be a positive divisor of {batch_size}, got {group}")
    return batch_size // group
