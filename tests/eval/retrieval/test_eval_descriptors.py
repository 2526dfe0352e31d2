"""GeM pooling, the retrieval descriptor and PCA whitening."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from patchdino.eval.common.pipeline import EvalSetupError
from patchdino.eval.retrieval.descriptors import PcaWhitening, RetrievalDescriptor, gem


def test_gem_is_the_mean_for_power_one_and_nears_the_maximum_for_large_powers() -> None:
    tokens = torch.rand(2, 5, 3) + 0.1  # (B, N, D), positive
    assert torch.allclose(gem(tokens, 1.0), tokens.mean(dim=1), atol=1e-6)
    assert torch.allclose(gem(tokens, 200.0), tokens.amax(dim=1), rtol=0.02)
    assert torch.allclose(gem(-tokens, 3.0), torch.full((2, 3), 1e-6))  # clamped


class _Tokens(nn.Module):
    """Images to fixed tokens: CLS = the mean pixel, patches = the pixels of channel 0."""

    def forward(self, images: Tensor) -> Tensor:
        patches = images[:, 0].flatten(1)[:, :, None].expand(-1, -1, 4)  # (B, H*W, 4)
        cls = images.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 1, 4)
        return torch.cat([cls, patches], dim=1)


@pytest.mark.parametrize(("name", "dim"), [("cls", 4), ("gem", 4), ("both", 8)])
def test_descriptor_is_a_unit_vector(name: str, dim: int) -> None:
    out = RetrievalDescriptor(_Tokens(), name)(torch.rand(3, 1, 4, 4))
    assert out.shape == (3, dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)


def test_descriptor_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="descriptor must be one of"):
        RetrievalDescriptor(_Tokens(), "max")


def test_whitening_decorrelates_its_training_features() -> None:
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=gen)
    features = torch.randn(500, 6, generator=gen) @ mixing + 3.0
    whitening = PcaWhitening.fit(features)
    projected = (features - whitening.mean) @ whitening.projection  # before normalising
    covariance = projected.T @ projected / (features.shape[0] - 1)
    assert torch.allclose(covariance, torch.eye(6), atol=1e-3)
    out = whitening(features)
    assert out.shape == (500, 6)
    assert torch.allclose(out.norm(dim=1), torch.ones(500), atol=1e-5)
    assert PcaWhitening.fit(features, dim=2)(features).shape == (500, 2)


def test_whitening_needs_enough_images() -> None:
    with pytest.raises(EvalSetupError, match="at least 2 images"):
        PcaWhitening.fit(torch.randn(1, 4))
    with pytest.raises(EvalSetupError, match=r"dimension must lie in \[1, 2\]"):
        PcaWhitening.fit(torch.randn(3, 4), dim=3)
