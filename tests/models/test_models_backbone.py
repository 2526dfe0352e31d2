"""Backbone: timm ViTs with dynamic sizes, grayscale input, last-block attention."""

from __future__ import annotations

import pytest
import torch

from patchdino.models.backbone import Backbone, create_backbone


@pytest.fixture(scope="module")
def pico() -> Backbone:
    torch.manual_seed(0)
    return create_backbone("vit_pico", patch_size=4, img_size=32).eval()


@pytest.mark.parametrize("size", [32, 16, 28])
def test_custom_vit_takes_several_sizes(pico: Backbone, size: int) -> None:
    tokens = pico(torch.randn(2, 3, size, size))
    assert tokens.shape == (2, 1 + (size // 4) ** 2, pico.embed_dim)
    assert pico.patch_size == 4 and pico.embed_dim == 32


def test_grayscale_and_custom_sizes() -> None:
    net = create_backbone(
        "vit_custom", patch_size=4, img_size=28, in_chans=1, embed_dim=24, depth=1, num_heads=3
    )
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 1 + 49, 24)
    assert net.num_heads == 3


def test_timm_name_with_overrides_at_224_and_96() -> None:
    net = create_backbone("vit_tiny_patch16_224", depth=1).eval()
    assert net.patch_size == 16 and net.embed_dim == 192
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 197, 192)
        assert net(torch.randn(2, 3, 96, 96)).shape == (2, 37, 192)


def test_patch_size_override_of_a_timm_name() -> None:
    net = create_backbone("vit_tiny_patch16_224", patch_size=8, img_size=32, depth=1)
    assert net.patch_size == 8
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 17, 192)


def test_last_selfattention_matches_timm_unfused_attention(pico: Backbone) -> None:
    x = torch.randn(2, 3, 16, 16)
    attn = pico.get_last_selfattention(x)
    heads = pico.num_heads
    assert attn.shape == (2, heads, 17, 17)
    torch.testing.assert_close(attn.sum(dim=-1), torch.ones(2, heads, 17))
    # Independent check: timm's own unfused path passes the weights through attn_drop.
    module = pico.model.blocks[-1].attn
    captured: list[torch.Tensor] = []
    handle = module.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
    fused = module.fused_attn
    module.fused_attn = False
    try:
        pico(x)
    finally:
        module.fused_attn = fused
        handle.remove()
    torch.testing.assert_close(attn, captured[0])


def test_intermediate_cls(pico: Backbone) -> None:
    x = torch.randn(2, 3, 32, 32)
    cls = pico.get_intermediate_cls(x, 2)
    assert len(cls) == 2 and all(c.shape == (2, 32) for c in cls)
    torch.testing.assert_close(cls[-1], pico(x)[:, 0])
    with pytest.raises(ValueError, match="depth"):
        pico.get_intermediate_cls(x, 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("resnet50")
    with pytest.raises(ValueError, match="embed_dim"):
        create_backbone("vit_custom", depth=2, num_heads=2)
    net = create_backbone("vit_pico", img_size=32)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        net(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match="registers must be >= 0"):
        create_backbone("vit_pico", img_size=32, registers=-1)


@pytest.fixture(scope="module")
def pico_reg() -> Backbone:
    torch.manual_seed(0)
    return create_backbone("vit_pico", patch_size=4, img_size=32, registers=4).eval()


def test_register_tokens_follow_cls_in_timms_order(pico_reg: Backbone) -> None:
    x = torch.randn(2, 3, 16, 16)
    tokens = pico_reg(x)
    assert pico_reg.num_prefix_tokens == 5 and pico_reg.num_registers == 4
    assert tokens.shape == (2, 5 + 16, 32)
    torch.testing.assert_close(tokens, pico_reg.model.forward_features(x))  # timm's own order
    # The registers are the learnt reg_token after the blocks: identical input in every image.
    embedded = pico_reg._embed(x)
    reg = pico_reg.model.reg_token.expand(2, -1, -1)
    torch.testing.assert_close(embedded[:, 1:5], reg)
    patches = pico_reg.patch_tokens(tokens)
    torch.testing.assert_close(patches, tokens[:, 5:])
    kept = pico_reg.without_registers(tokens)
    torch.testing.assert_close(kept, torch.cat([tokens[:, :1], tokens[:, 5:]], dim=1))


def test_registers_of_a_timm_reg4_name_and_an_override() -> None:
    named = create_backbone("vit_small_patch14_reg4_dinov2", img_size=28, depth=1)
    assert named.num_registers == 4 and named.patch_size == 14
    assert named(torch.randn(1, 3, 28, 28)).shape == (1, 5 + 4, 384)
    none = create_backbone("vit_small_patch14_reg4_dinov2", img_size=28, depth=1, registers=0)
    assert none.num_registers == 0
    added = create_backbone("vit_tiny_patch16_224", img_size=32, depth=1, registers=2)
    assert added.num_prefix_tokens == 3
    assert added.model.pos_embed.shape[1] == 4  # registers get no position (no_embed_class)


def test_attention_of_a_register_backbone_covers_every_token(pico_reg: Backbone) -> None:
    attn = pico_reg.get_last_selfattention(torch.randn(1, 3, 16, 16))
    assert attn.shape == (1, pico_reg.num_heads, 21, 21)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, pico_reg.num_heads, 21))


def test_without_registers_is_the_tokens_themselves_without_registers(pico: Backbone) -> None:
    tokens = torch.randn(2, 17, 32)
    assert pico.without_registers(tokens) is tokens
    assert pico.num_prefix_tokens == 1
