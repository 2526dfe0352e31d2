"""The raw-pixel baseline: its statistics against numpy's, given statistics applied as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchdino.eval import pixel_features, pixel_statistics


def test_pixel_features_per_channel_normalisation() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 5, 4), generator=gen, dtype=torch.uint8)
    feats = pixel_features(images, per_pixel_mean=False)
    assert feats.shape == (50, 60) and feats.dtype == torch.float32
    per_channel = feats.reshape(50, 3, 5, 4).transpose(0, 1).reshape(3, -1).double()
    np.testing.assert_allclose(per_channel.mean(dim=1).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(dim=1, unbiased=False).numpy(), 1.0, atol=1e-5)

    mean, std = pixel_statistics(images, per_pixel_mean=False)
    unit = images.double().numpy() / 255.0
    np.testing.assert_allclose(mean.numpy(), unit.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(std.numpy(), unit.std(axis=(0, 2, 3)), atol=1e-6)


def test_pixel_features_per_pixel_mean_and_given_statistics() -> None:
    gen = torch.Generator().manual_seed(1)
    train = torch.randint(0, 256, (40, 2, 3, 3), generator=gen, dtype=torch.uint8)
    test = torch.randint(0, 256, (7, 2, 3, 3), generator=gen, dtype=torch.uint8)
    feats = pixel_features(train)  # mean image, per-channel std
    np.testing.assert_allclose(feats.double().mean(dim=0).numpy(), 0.0, atol=1e-5)

    mean, std = pixel_statistics(train)
    assert mean.shape == (2, 3, 3) and std.shape == (2,)
    unit = test.double().numpy() / 255.0
    expected = (unit - mean.double().numpy()) / std.double().numpy()[:, None, None]
    np.testing.assert_allclose(
        pixel_features(test, mean, std).numpy(), expected.reshape(7, -1), atol=1e-5
    )
    # Given per-channel statistics are applied as such, also to float images in [0, 1].
    given = pixel_features(test.float() / 255.0, mean=[0.5, 0.25], std=[0.5, 2.0])
    chan = np.array([0.5, 0.25])[:, None, None]
    scale = np.array([0.5, 2.0])[:, None, None]
    np.testing.assert_allclose(given.numpy(), ((unit - chan) / scale).reshape(7, -1), atol=1e-5)


def test_pixel_features_rejects_bad_input() -> None:
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pixel_features(images[0])
    with pytest.raises(ValueError, match="uint8 or floating"):
        pixel_features(images.long())
    with pytest.raises(ValueError, match="per channel"):
        pixel_features(images, mean=[0.5, 0.5], std=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        pixel_features(images, mean=[0.5] * 3, std=[1.0, 0.0, 1.0])
