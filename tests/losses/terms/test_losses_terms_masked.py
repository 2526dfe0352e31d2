"""The masked-patch term and the weighted sum of terms, against loops over images and patches."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from patchdino.losses.local_global import LocalGlobalLoss
from patchdino.models.head import DINOHead

B, D, K, GRID = 3, 10, 18, 3
N = GRID * GRID
T_S, T_T = 0.1, 0.05


def _head(seed: int) -> DINOHead:
    torch.manual_seed(seed)
    return DINOHead(D, K, hidden_dim=16, bottleneck_dim=6, nlayers=2).double()


def _tokens(seed: int, views: int, grad: bool) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, 1 + N, D, generator=g, dtype=torch.float64).requires_grad_(grad)
        for _ in range(views)
    ]


def _masks() -> list[Tensor]:
    g = torch.Generator().manual_seed(7)
    masks = [torch.rand(B, N, generator=g) < 0.4 for _ in range(2)]
    masks[0][1] = False  # an image without hidden patches
    masks[1][2] = True  # one with every patch hidden
    return masks


def masked_by_loops(
    student: list[Tensor],
    teacher: list[Tensor],
    masks: list[Tensor],
    heads: tuple[DINOHead, DINOHead],
    centre: Tensor,
) -> Tensor:
    """Mean over masked (image, view) of the mean CE of its hidden patches (iBOT)."""
    per_view = []
    for v, mask in enumerate(masks):
        for b in range(B):
            hidden = mask[b].nonzero().flatten().tolist()
            if not hidden:
                continue
            losses = []
            for p in hidden:
                t = heads[1](teacher[v][b, 1 + p]).detach()
                target = torch.softmax((t - centre) / T_T, dim=0)
                s = heads[0](student[v][b, 1 + p])
                losses.append(-(target * torch.log_softmax(s / T_S, dim=0)).sum())
            per_view.append(torch.stack(losses).mean())
    return torch.stack(per_view).mean()


def _loss(**weights: float) -> LocalGlobalLoss:
    loss = LocalGlobalLoss(K, N, student_temp=T_S, centre_mode="shared", weights=weights).double()
    with torch.no_grad():  # each row its own draw, the same whichever rows the centre has
        for row, values in enumerate(loss.centre.centre):
            g = torch.Generator().manual_seed(3 + row)
            values.copy_(torch.randn(K, generator=g, dtype=torch.float64))
    return loss


def test_masked_term_matches_the_loops() -> None:
    student, teacher = _tokens(1, 3, True), _tokens(2, 2, False)
    s_head, t_head = _head(4), _head(5)
    masks = _masks()
    loss = _loss(cls=0.0, patch=0.0, masked=1.0)
    centre = loss.centre.centre[1].clone()  # the patch row of the shared centre
    plan = loss.plan(None, [1 + N] * 3, B, 2, masks=masks)
    out = loss(student, teacher, (s_head, s_head), (t_head, t_head), T_T, plan=plan)
    expected = masked_by_loops(student, teacher, masks, (s_head, t_head), centre)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    assert set(out.terms) == {"loss_cls", "loss_patch", "loss_masked"}
    got = torch.autograd.grad(out.loss, student[:2])
    want = torch.autograd.grad(expected, student[:2])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_masked_term_moves_the_patch_centre_to_the_hidden_positions() -> None:
    student, teacher = _tokens(1, 3, True), _tokens(2, 2, False)
    s_head, t_head = _head(4), _head(5)
    masks = _masks()
    loss = _loss(cls=0.0, patch=0.0, masked=1.0)
    before = loss.centre.centre.clone()
    plan = loss.plan(None, [1 + N] * 3, B, 2, masks=masks)
    loss(student, teacher, (s_head, s_head), (t_head, t_head), T_T, plan=plan)
    with torch.no_grad():
        hidden = torch.cat([teacher[v][:, 1:][masks[v]] for v in range(2)])  # (M, D)
        mean = t_head(hidden).mean(dim=0)
    torch.testing.assert_close(loss.centre.centre[1], 0.9 * before[1] + 0.1 * mean)


def test_terms_add_with_their_weights() -> None:
    student, teacher = _tokens(1, 3, True), _tokens(2, 2, False)
    s_head, t_head = _head(4), _head(5)
    masks = _masks()
    heads = ((s_head, s_head), (t_head, t_head))

    def run(**weights: float) -> dict[str, Tensor]:
        loss = _loss(patch=0.0, **weights)
        with_masks = masks if weights.get("masked", 0.0) > 0 else None
        plan = loss.plan(None, [1 + N] * 3, B, 2, masks=with_masks)
        out = loss(student, teacher, *heads, T_T, plan=plan, update_centre=False)
        total = float(sum(out.terms.values()).detach())
        assert float(out.loss.detach()) == pytest.approx(total, rel=1e-12)
        return dict(out.terms)

    cls = run(cls=1.0)["loss_cls"]
    masked = run(cls=0.0, masked=1.0)["loss_masked"]
    both = run(cls=0.5, masked=2.0, koleo=0.25)
    torch.testing.assert_close(both["loss_cls"], 0.5 * cls)
    torch.testing.assert_close(both["loss_masked"], 2.0 * masked)
    assert list(both) == ["loss_cls", "loss_patch", "loss_masked", "loss_koleo"]
    assert float(both["loss_patch"]) == 0.0 and float(both["loss_koleo"]) != 0.0


def test_the_masked_term_needs_masks() -> None:
    loss = _loss(masked=1.0)
    with pytest.raises(ValueError, match="needs masks"):
        loss.plan(None, [1 + N] * 3, B, 2)
    with pytest.raises(ValueError, match="unknown loss terms"):
        _loss(ibot=1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        _loss(koleo=-1.0)
