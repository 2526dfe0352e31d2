"""DINO head: staged forward, weight normalisation, frozen or learnt norms."""

from __future__ import annotations

import pytest
import torch

from patchdino.models.head import DINOHead


def test_logits_are_bottleneck_times_normalised_weight() -> None:
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=40, hidden_dim=24, bottleneck_dim=8)
    x = torch.randn(5, 16)
    features = head.forward_bottleneck(x)
    weight = head.last_layer_weight()
    assert features.shape == (5, 8) and weight.shape == (40, 8)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(head(x), features @ weight.T)
    v = head.last_layer.weight_v
    torch.testing.assert_close(weight, v / v.norm(dim=1, keepdim=True))
    assert head.last_layer.weight_g is None


def test_learnt_norms_and_layer_count() -> None:
    head = DINOHead(
        16, out_dim=10, hidden_dim=24, bottleneck_dim=8, nlayers=1, norm_last_layer=False
    )
    assert len([m for m in head.mlp if isinstance(m, torch.nn.Linear)]) == 1
    assert head.last_layer.weight_g is not None
    with torch.no_grad():
        head.last_layer.weight_g.fill_(2.0)
    torch.testing.assert_close(head.last_layer_weight().norm(dim=1), torch.full((10,), 2.0))
    head(torch.randn(3, 16)).sum().backward()
    assert head.last_layer.weight_g.grad is not None
    assert (
        len([m for m in DINOHead(4, 5, 6, 3, nlayers=3).mlp if isinstance(m, torch.nn.Linear)]) == 3
    )
    with pytest.raises(ValueError, match="nlayers"):
        DINOHead(4, nlayers=0)
