"""The backbone's mask token: hidden patches get it before the position embedding (iBOT)."""

from __future__ import annotations

import pytest
import torch

from patchdino.models.backbone import create_backbone
from patchdino.models.student_teacher import StudentTeacher


def _by_hand(net: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """timm's forward, step by step, with the hidden embeddings replaced in between."""
    m = net.model  # type: ignore[attr-defined]
    embedded = m.patch_embed(x)  # (B, h, w, D)
    flat = embedded.reshape(x.shape[0], -1, embedded.shape[-1])
    flat = torch.where(mask[..., None], net.mask_token.expand_as(flat), flat)  # type: ignore[attr-defined]
    tokens = m.norm_pre(m.patch_drop(m._pos_embed(flat.reshape(embedded.shape))))
    return m.norm(m.blocks(tokens))


@pytest.mark.parametrize("arch", ["vit_pico", "vit_tiny_patch16_224"])
def test_masked_forward_equals_the_steps_by_hand(arch: str) -> None:
    torch.manual_seed(0)
    patch = 4 if arch == "vit_pico" else 16
    net = create_backbone(arch, patch_size=patch, img_size=8 * patch, mask_token=True, depth=2)
    net.eval()
    with torch.no_grad():
        net.mask_token.normal_()  # type: ignore[union-attr]
    x = torch.randn(2, 3, 8 * patch, 8 * patch)
    mask = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) < 0.4
    with torch.no_grad():
        torch.testing.assert_close(net(x, mask), _by_hand(net, x, mask))
        torch.testing.assert_close(net(x, torch.zeros_like(mask)), net(x))
        assert not torch.allclose(net(x, mask), net(x))


def test_mask_token_learns_and_is_optional() -> None:
    net = create_backbone("vit_pico", patch_size=4, img_size=16, mask_token=True)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, :5] = True
    net(torch.randn(1, 3, 16, 16), mask).sum().backward()
    assert net.mask_token is not None and net.mask_token.grad is not None
    assert float(net.mask_token.grad.abs().sum()) > 0
    plain = create_backbone("vit_pico", patch_size=4, img_size=16)
    assert plain.mask_token is None and "mask_token" not in plain.state_dict()
    with pytest.raises(ValueError, match="no mask token"):
        plain(torch.randn(1, 3, 16, 16), mask)


def test_student_masks_only_the_views_given_masks() -> None:
    torch.manual_seed(0)
    model = StudentTeacher.create("vit_pico", patch_size=4, img_size=16, out_dim=8, mask_token=True)
    model.eval()
    views = [torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 8, 8)]
    masks = [torch.ones(2, 16, dtype=torch.bool), torch.zeros(2, 16, dtype=torch.bool)]
    with torch.no_grad():
        masked = model.forward_student(views, masks)
        plain = model.forward_student(views)
        alone = model.student.backbone(views[0], masks[0])
    torch.testing.assert_close(masked[0], alone)
    torch.testing.assert_close(masked[1], plain[1])
    torch.testing.assert_close(masked[2], plain[2])
