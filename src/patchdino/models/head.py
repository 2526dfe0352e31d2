"""DINO projection head: MLP, L2-normalised bottleneck, weight-normalised last layer.

The head is split in two stages so that the loss can compute the large ``K``-wide logits in
chunks: :meth:`DINOHead.forward_bottleneck` gives the normalised bottleneck features and
:meth:`DINOHead.last_layer_weight` the normalised ``(K, bottleneck)`` weight; the logits are
their product, which is what :meth:`DINOHead.forward` returns.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightNormLinear(nn.Module):
    """Linear layer without bias whose rows are normalised: ``w_k = g_k * v_k / |v_k|``.

    Args:
        in_dim: input width ``d``.
        out_dim: output width ``K``.
        learn_norm: learn the row norms ``g`` (initialised to 1); False fixes ``g = 1``.

    Attributes:
        weight_v: ``(K, d)`` direction parameter.
        weight_g: ``(K,)`` norm parameter, or None when the norm is fixed to 1.
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim).uniform_(-bound, bound))
        self.weight_g: nn.Parameter | None = (
            nn.Parameter(torch.ones(out_dim)) if learn_norm else None
        )

    def weight(self) -> Tensor:
        """``(K, d)`` normalised weight."""
        w = F.normalize(self.weight_v, dim=1)  # (K, d)
        if self.weight_g is not None:
            w = w * self.weight_g[:, None]
        return w

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d)`` -> ``(..., K)``."""
        return F.linear(x, self.weight())


class DINOHead(nn.Module):
    """MLP -> bottleneck -> L2 normalisation -> weight-normalised linear layer to ``out_dim``.

    Args:
        in_dim: backbone token width ``D``.
        out_dim: number of prototypes ``K``.
        hidden_dim: MLP hidden width.
        bottleneck_dim: bottleneck width ``d``.
        nlayers: MLP layers (1 maps ``D`` straight to ``d``).
        norm_last_layer: fix the last layer's row norms to 1 (DINO's default); False learns them.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be at least 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b))
            if index < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)
        self.out_dim = out_dim
        self.bottleneck_dim = bottleneck_dim

    def forward_bottleneck(self, x: Tensor) -> Tensor:
        """``(..., D)`` tokens -> ``(..., d)`` L2-normalised bottleneck features."""
        return F.normalize(self.mlp(x), dim=-1)

    def last_layer_weight(self) -> Tensor:
        """``(K, d)`` normalised last-layer weight; logits are ``features @ weight.T``."""
        return self.last_layer.weight()

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D)`` tokens -> ``(..., K)`` logits."""
        return F.linear(self.forward_bottleneck(x), self.last_layer_weight())
