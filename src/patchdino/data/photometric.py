"""DINO's photometric augmentations, batched with per-sample random parameters.

Every function takes float images ``(B, C, H, W)`` with values in ``[0, 1]`` and ``C`` = 1 or 3,
and per-sample parameters as ``(B,)`` tensors, and works on any device without a loop over
samples. The functional ops follow ``torchvision.transforms.v2.functional`` on float images.
Single-channel images are treated as grayscale: saturation, hue and grayscale conversion leave
them unchanged, while brightness, contrast, blur and solarisation apply.

``PhotometricAugmentation`` draws DINO's random pipeline for one view: colour jitter (applied
with probability ``color_jitter_p``, its four adjustments in an order drawn per sample, as
torchvision's ``ColorJitter`` does per image), random grayscale, Gaussian blur and solarisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from patchdino.data.crops import uniform

LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def luma(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` images -> ``(B, 1, H, W)`` luminance (the image itself when C = 1)."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (r * LUMA_WEIGHTS[0] + g * LUMA_WEIGHTS[1] + b * LUMA_WEIGHTS[2]).unsqueeze(1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` images -> ``(B, C, H, W)`` luminance repeated over the channels."""
    return luma(images).expand_as(images)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    factor = _per_sample(factor)
    return (factor * images + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Scale ``(B, C, H, W)`` images by a ``(B,)`` factor each."""
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend ``(B, C, H, W)`` images with their mean luminance by a ``(B,)`` factor each."""
    return _blend(images, luma(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend ``(B, C, H, W)`` images with their own grayscale by a ``(B,)`` factor each."""
    if images.shape[1] == 1:
        return images
    return _blend(images, luma(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of ``(B, C, H, W)`` images by a ``(B,)`` shift each, in turns."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)  # (B, H, W) each
    value, _ = images.max(dim=1)
    chroma = value - images.min(dim=1).values
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    safe_chroma = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    hue = torch.where(
        value == r,
        (g - b) / safe_chroma,
        torch.where(value == g, 2.0 + (b - r) / safe_chroma, 4.0 + (r - g) / safe_chroma),
    )
    hue = torch.where(chroma == 0, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + shift.view(-1, 1, 1), 1.0)

    # HSV -> RGB: channel with offset n is v * (1 - s * clamp(min(k, 4 - k), 0, 1)),
    # k = (n + 6 * hue) mod 6, with n = 5, 3, 1 for red, green, blue.
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype)
    k = torch.remainder(hue.unsqueeze(1) * 6.0 + offsets.view(1, 3, 1, 1), 6.0)  # (B, 3, H, W)
    weight = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * weight)


def _jitter_step(images: Tensor, op: Tensor, factors: Tensor) -> Tensor:
    """Apply one of brightness / contrast / saturation per sample (``op == HUE``: identity)."""
    identity = (op == HUE) | ((op == SATURATION) & (images.shape[1] == 1))
    factor = factors.gather(1, op.clamp(max=SATURATION).unsqueeze(1)).squeeze(1)
    factor = torch.where(identity, torch.ones_like(factor), factor)
    gray = luma(images)
    reference = torch.where(
        _per_sample(op == CONTRAST),
        gray.mean(dim=(1, 2, 3), keepdim=True),
        torch.where(_per_sample(op == SATURATION), gray, torch.zeros_like(gray)),
    )
    return _blend(images, reference, factor)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue changes in a per-sample order.

    Args:
        images: ``(B, C, H, W)`` float images in ``[0, 1]``.
        factors: ``(B, 4)`` brightness, contrast and saturation factors and hue shift; the
            identity is ``(1, 1, 1, 0)``.
        order: ``(B, 4)`` long tensor, a permutation of ``0..3`` (brightness, contrast,
            saturation, hue) per sample: the order in which the four changes are applied.

    Returns:
        ``(B, C, H, W)`` jittered images.
    """
    hue_position = (order == HUE).to(torch.uint8).argmax(dim=1)  # (B,)
    out = images
    for k in range(3):  # changes before the hue shift; HUE marks "nothing" at this step
        out = _jitter_step(out, torch.where(hue_position > k, order[:, k], HUE), factors)
    shift = factors[:, HUE]
    out = torch.where(_per_sample(shift != 0), adjust_hue(out, shift), out)
    for k in range(1, 4):  # changes after the hue shift
        out = _jitter_step(out, torch.where(hue_position < k, order[:, k], HUE), factors)
    return out


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert the pixels of ``(B, C, H, W)`` images at or above ``threshold``."""
    return torch.where(images >= threshold, 1.0 - images, images)


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side for a view of side ``size``: about 10% of it, at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with reflected borders and a ``(B,)`` sigma per sample.

    Args:
        images: ``(B, C, H, W)`` float images.
        sigma: ``(B,)`` positive standard deviations in pixels.
        kernel_size: odd kernel side, smaller than twice the image side.

    Returns:
        ``(B, C, H, W)`` blurred images.
    """
    batch, channels, height, width = images.shape
    if kernel_size % 2 != 1 or kernel_size // 2 >= min(height, width):
        raise ValueError(f"kernel_size {kernel_size} must be odd and fit a {height}x{width} image")
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, device=images.device, dtype=images.dtype)
    kernel = torch.softmax(-0.5 * (x / sigma.to(images).unsqueeze(1)) ** 2, dim=1)  # (B, k)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    flat = F.pad(images.reshape(1, batch * channels, height, width), (pad,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(images - mean) / std`` per channel of ``(B, C, H, W)`` images; C entries each."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


@dataclass(frozen=True)
class PhotometricAugmentation:
    """DINO's random photometric pipeline for one view, drawn independently per sample.

    Attributes:
        color_jitter_p: probability of colour jitter.
        brightness: brightness factor drawn from ``[max(0, 1 - b), 1 + b]``.
        contrast: contrast factor drawn from ``[max(0, 1 - c), 1 + c]``.
        saturation: saturation factor drawn from ``[max(0, 1 - s), 1 + s]``.
        hue: hue shift drawn from ``[-hue, hue]``.
        grayscale_p: probability of grayscale conversion.
        blur_p: probability of Gaussian blur.
        blur_sigma: range of the blur's standard deviation in pixels.
        solarize_p: probability of solarisation at threshold 0.5.
    """

    color_jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``(B, C, H, W)`` float images in ``[0, 1]``; returns the same shape."""
        batch, device = images.shape[0], images.device

        def chosen(p: float) -> Tensor:  # (B, 1, 1, 1) bool, True with probability p
            return _per_sample(uniform((batch,), generator, device) < p)

        out = images
        if self.color_jitter_p > 0:
            strengths = (self.brightness, self.contrast, self.saturation)
            low = torch.tensor([*(max(0.0, 1 - s) for s in strengths), -self.hue], device=device)
            high = torch.tensor([*(1 + s for s in strengths), self.hue], device=device)
            factors = low + (high - low) * uniform((batch, 4), generator, device)  # (B, 4)
            identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)
            factors = torch.where(chosen(self.color_jitter_p).view(-1, 1), factors, identity)
            order = uniform((batch, 4), generator, device).argsort(dim=1)  # (B, 4)
            out = color_jitter(out, factors, order)
        if self.grayscale_p > 0 and out.shape[1] == 3:
            out = torch.where(chosen(self.grayscale_p), rgb_to_grayscale(out), out)
        if self.blur_p > 0:
            sigma = uniform((batch,), generator, device, *self.blur_sigma)
            kernel_size = blur_kernel_size(min(out.shape[-2:]))
            out = torch.where(chosen(self.blur_p), gaussian_blur(out, sigma, kernel_size), out)
        if self.solarize_p > 0:
            out = torch.where(chosen(self.solarize_p), solarize(out), out)
        return out
