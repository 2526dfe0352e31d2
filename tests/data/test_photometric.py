"""Batched photometric ops against torchvision's, one sample at a time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from patchdino.data.photometric import (
    PhotometricAugmentation,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    normalize,
    rgb_to_grayscale,
    solarize,
)

ATOL = 1e-5


def _images(channels: int, batch: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, channels, 12, 10, generator=g)
    images[0] = images[0].mean(dim=0, keepdim=True)  # gray pixels: zero chroma
    images[1, :, :2] = 0.0  # black and white corners
    images[1, :, -2:] = 1.0
    return images


FACTORS = torch.tensor([0.6, 1.0, 1.37, 0.0, 2.0])
SHIFTS = torch.tensor([-0.1, 0.0, 0.07, 0.5, -0.5])

OPS: list[tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor], torch.Tensor]] = [
    (adjust_brightness, TF.adjust_brightness, FACTORS),
    (adjust_contrast, TF.adjust_contrast, FACTORS),
    (adjust_saturation, TF.adjust_saturation, FACTORS),
    (adjust_hue, TF.adjust_hue, SHIFTS),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("ours", "theirs", "factors"), OPS)
def test_adjustments_match_torchvision(
    channels: int,
    ours: Callable[..., torch.Tensor],
    theirs: Callable[..., torch.Tensor],
    factors: torch.Tensor,
) -> None:
    images = _images(channels)
    out = ours(images, factors)
    assert out.shape == images.shape
    for b in range(len(images)):
        assert torch.allclose(out[b], theirs(images[b], float(factors[b])), atol=ATOL)


def test_grayscale_and_solarize_match_torchvision() -> None:
    images = _images(3)
    gray = rgb_to_grayscale(images)
    assert gray.shape == images.shape
    for b in range(len(images)):
        assert torch.allclose(gray[b], TF.rgb_to_grayscale(images[b], 3), atol=ATOL)
        assert torch.equal(solarize(images)[b], TF.solarize(images[b], 0.5))
    single = _images(1)
    assert torch.equal(rgb_to_grayscale(single), single)


@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_matches_torchvision(channels: int) -> None:
    images = _images(channels)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    for kernel_size in (3, 7, 9):
        out = gaussian_blur(images, sigma, kernel_size)
        for b in range(len(images)):
            expected = TF.gaussian_blur(images[b], [kernel_size] * 2, [float(sigma[b])] * 2)
            assert torch.allclose(out[b], expected, atol=ATOL)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(images, sigma, 4)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(images, sigma, 21)


def test_blur_kernel_size_scales_with_the_view() -> None:
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(32) == 3
    assert blur_kernel_size(8) == 3


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_follows_each_samples_order(channels: int) -> None:
    images = _images(channels, batch=8, seed=1)
    g = torch.Generator().manual_seed(0)
    factors = torch.stack(
        [
            0.6 + 0.8 * torch.rand(8, generator=g),
            0.6 + 0.8 * torch.rand(8, generator=g),
            0.8 + 0.4 * torch.rand(8, generator=g),
            -0.1 + 0.2 * torch.rand(8, generator=g),
        ],
        dim=1,
    )
    order = torch.rand(8, 4, generator=g).argsort(dim=1)
    order[0] = torch.tensor([3, 2, 1, 0])  # hue first
    order[1] = torch.tensor([0, 1, 2, 3])  # hue last
    out = color_jitter(images, factors, order)
    functions = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for b in range(8):
        expected = images[b]
        for op in order[b].tolist():
            expected = functions[op](expected, float(factors[b, op]))
        assert torch.allclose(out[b], expected, atol=ATOL)
    identity = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(8, 4)
    assert torch.equal(color_jitter(images, identity, order), images)


def test_normalize() -> None:
    images = _images(3)
    out = normalize(images, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert torch.allclose(out[:, 1], (images[:, 1] - 0.2) / 0.25)
    assert torch.allclose(out[:, 2], (images[:, 2] - 0.3) / 2.0)


def test_pipeline_with_nothing_enabled_is_identity() -> None:
    images = _images(3)
    augment = PhotometricAugmentation(color_jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    assert torch.equal(augment(images), images)


def test_pipeline_with_certain_ops() -> None:
    images = _images(3, batch=6)
    solar = PhotometricAugmentation(color_jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=1.0)
    assert torch.equal(solar(images), solarize(images))
    gray = PhotometricAugmentation(color_jitter_p=0, grayscale_p=1.0, blur_p=0)
    out = gray(images)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_pipeline_is_per_sample_and_reproducible() -> None:
    images = _images(3, batch=3)[2:].expand(64, 3, 12, 10).contiguous()
    augment = PhotometricAugmentation(blur_p=0.5, solarize_p=0.2)
    out = augment(images, torch.Generator().manual_seed(0))
    again = augment(images, torch.Generator().manual_seed(0))
    other = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert out.min() >= 0 and out.max() <= 1
    distinct = {tuple(v.flatten()[:8].tolist()) for v in out}
    assert len(distinct) > 50  # same input, different draws
    unchanged = (out == images).flatten(1).all(dim=1).float().mean()
    assert 0.0 < unchanged < 0.25  # no jitter (0.2) * no blur (0.5) * no solarize (0.8) ~ 0.08


def test_pipeline_on_single_channel_images() -> None:
    images = _images(1, batch=16)
    out = PhotometricAugmentation(blur_p=0.5, solarize_p=0.5)(
        images, torch.Generator().manual_seed(0)
    )
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    images = _images(3, batch=16)
    augment = PhotometricAugmentation(blur_p=0.5, solarize_p=0.5)
    cpu = augment(images, torch.Generator().manual_seed(3))
    gpu = augment(images.cuda(), torch.Generator().manual_seed(3))
    assert gpu.is_cuda and torch.allclose(cpu, gpu.cpu(), atol=1e-4)
