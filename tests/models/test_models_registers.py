"""Register tokens everywhere patch tokens are read: every consumer skips CLS and registers.

Each consumer's patch tokens are compared with the backbone's own output sliced by position
(CLS at 0, the ``R`` registers at ``1..R``, patches after), so a consumer that took the
registers for patches, or dropped patches, fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from patchdino.eval.common.backbone_loading import PooledBackbone
from patchdino.eval.dense.segmentation import patch_feature_map
from patchdino.eval.retrieval.descriptors import RetrievalDescriptor, gem
from patchdino.eval.retrieval.options import GEM_POWER
from patchdino.eval.video.video_segmentation import patch_features
from patchdino.models.backbone import Backbone, create_backbone, prefix_count
from patchdino.viz.attention import attention_maps

R = 4
SIDE, PATCH = 16, 4
N = (SIDE // PATCH) ** 2


@pytest.fixture(scope="module")
def reg() -> Backbone:
    torch.manual_seed(0)
    return create_backbone("vit_pico", patch_size=PATCH, img_size=SIDE, registers=R).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def _patches(reg: Backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        tokens = reg(images)
    assert tokens.shape[1] == 1 + R + N
    return tokens[:, 1 + R :]  # (B, N, D)


def test_prefix_count(reg: Backbone) -> None:
    assert prefix_count(reg) == 1 + R
    assert prefix_count(reg.model) == 1 + R  # timm's own attribute
    assert prefix_count(torch.nn.Identity()) == 1


def test_mean_pooling_averages_patches_only(reg: Backbone, images: torch.Tensor) -> None:
    with torch.no_grad():
        pooled = PooledBackbone(reg, "both")(images)
    cls = reg(images)[:, 0]
    torch.testing.assert_close(pooled, torch.cat([cls, _patches(reg, images).mean(1)], dim=1))


def test_segmentation_map_is_the_patch_grid(reg: Backbone, images: torch.Tensor) -> None:
    with torch.no_grad():
        fmap = patch_feature_map(reg, images, layers=1)  # (B, D, h, w)
    want = _patches(reg, images).transpose(1, 2).reshape(2, -1, SIDE // PATCH, SIDE // PATCH)
    torch.testing.assert_close(fmap, want)


def test_propagation_features_are_the_patches(reg: Backbone, images: torch.Tensor) -> None:
    got = patch_features(reg, images)
    torch.testing.assert_close(got, F.normalize(_patches(reg, images), dim=-1))


def test_gem_descriptor_pools_patches_only(reg: Backbone, images: torch.Tensor) -> None:
    with torch.no_grad():
        got = RetrievalDescriptor(reg, "gem")(images)
    want = F.normalize(gem(_patches(reg, images), GEM_POWER), dim=1)
    torch.testing.assert_close(got, want)


def test_attention_maps_leave_registers_out(reg: Backbone, images: torch.Tensor) -> None:
    maps = attention_maps(reg, images)  # (B, heads, h, w)
    attn = reg.get_last_selfattention(images)
    torch.testing.assert_close(maps.flatten(2), attn[:, :, 0, 1 + R :])
    assert maps.shape == (2, reg.num_heads, SIDE // PATCH, SIDE // PATCH)
