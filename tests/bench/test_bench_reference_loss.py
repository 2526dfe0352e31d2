"""The reference computation (head on all tokens, per-pair gathers) equals LocalGlobalLoss."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from patchdino.bench.reference_loss import ReferenceLocalGlobalLoss
from patchdino.losses import LocalGlobalLoss
from patchdino.matching.types import PatchMatches
from patchdino.models.head import DINOHead

B, D, K, K_PATCH = 3, 10, 18, 12
GLOBAL_GRID, LOCAL_GRID, NUM_LOCAL = 3, 2, 2
T_T = 0.05


def _head(k: int, seed: int) -> DINOHead:
    torch.manual_seed(seed)
    return DINOHead(D, k, hidden_dim=16, bottleneck_dim=6, nlayers=2).double()


def _matches(n_a: int, n_b: int, g: torch.Generator) -> PatchMatches:
    """Random pairs (repeats allowed, as a matcher may pair one patch several times)."""
    index_a = torch.randint(0, n_a, (B, 5), generator=g)
    index_b = torch.randint(0, n_b, (B, 5), generator=g)
    valid = torch.rand(B, 5, generator=g) < 0.6
    valid[1] = False  # a sample without matched patches
    return PatchMatches(index_a, index_b, valid)


def _inputs(seed: int) -> tuple[list[Tensor], list[Tensor], dict[tuple[int, int], PatchMatches]]:
    g = torch.Generator().manual_seed(seed)
    grids = [GLOBAL_GRID] * 2 + [LOCAL_GRID] * NUM_LOCAL
    student = [torch.randn(B, 1 + n * n, D, generator=g, dtype=torch.float64) for n in grids]
    teacher = [torch.randn(B, 1 + n * n, D, generator=g, dtype=torch.float64) for n in grids[:2]]
    matches = {
        (i, v): _matches(grids[i] ** 2, grids[v] ** 2, g)
        for i, v in itertools.product(range(2), range(len(grids)))
        if i != v
    }
    return student, teacher, matches


@pytest.mark.parametrize(
    ("separate", "centre_mode", "weighting", "patch_loss"),
    [
        (False, "position", "token", True),
        (True, "shared", "token", True),
        (False, "shared", "split", True),
        (True, "position", "split", True),
        (False, "position", "token", False),
    ],
)
def test_reference_equals_local_global_loss(
    separate: bool, centre_mode: str, weighting: str, patch_loss: bool
) -> None:
    student, teacher, matches = _inputs(seed=1)
    s_cls, t_cls = _head(K, 1), _head(K, 2)
    s_patch = _head(K_PATCH, 3) if separate else s_cls
    t_patch = _head(K_PATCH, 4) if separate else t_cls
    loss = LocalGlobalLoss(
        K,
        GLOBAL_GRID**2,
        patch_out_dim=K_PATCH if separate else None,
        centre_mode=centre_mode,
        patch_loss=patch_loss,
        cls_weighting=weighting,
        cls_weight=0.3,
    ).double()
    torch.manual_seed(7)
    for centre in (loss.centre, loss.patch_centre):
        if centre is not None:
            centre.centre.normal_()  # a non-zero centre, so that its rows matter
    reference = ReferenceLocalGlobalLoss(loss)
    for a, b in zip(loss.buffers(), reference.buffers()):
        assert torch.equal(a, b)

    def run(module: torch.nn.Module) -> tuple[Tensor, Tensor, Tensor, list[Tensor | None]]:
        tokens = [s.clone().requires_grad_() for s in student]
        for p in s_cls.parameters():
            p.grad = None
        out = module(tokens, teacher, (s_cls, s_patch), (t_cls, t_patch), T_T, matches=matches)
        out.loss.backward()
        grads = [t.grad for t in tokens] + [p.grad for p in s_cls.parameters()]
        return out.loss, out.terms["loss_cls"], out.terms["loss_patch"], grads

    ours = run(loss)
    theirs = run(reference)
    for a, b in zip(ours[:3], theirs[:3]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert ours[0].item() > 0
    for grad, expected in zip(ours[3], theirs[3]):
        assert grad is not None and expected is not None
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_reference_updates_the_centre_from_every_teacher_token() -> None:
    student, teacher, matches = _inputs(seed=2)
    head = _head(K, 1)
    reference = ReferenceLocalGlobalLoss(
        LocalGlobalLoss(K, GLOBAL_GRID**2, centre_momentum=0.5).double()
    )
    reference(student, teacher, (head, head), (head, head), T_T, matches=matches)
    with torch.no_grad():
        logits = torch.stack([head(t) for t in teacher])  # (2, B, 1 + N, K)
    expected = 0.5 * logits.mean(dim=(0, 1))  # every position seen, from a zero centre
    torch.testing.assert_close(reference.centre.centre, expected)


def test_reference_rejects_local_local_pairs() -> None:
    loss = LocalGlobalLoss(K, GLOBAL_GRID**2, num_local_patches=4, local_local=True)
    with pytest.raises(ValueError, match="local-local"):
        ReferenceLocalGlobalLoss(loss)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reference_equals_local_global_loss_on_cuda_in_bf16() -> None:
    """Under bf16 autocast on the GPU both computations agree to bf16 precision."""
    device = torch.device("cuda")
    student, teacher, matches = _inputs(seed=3)
    head_s, head_t = _head(K, 1).float().to(device), _head(K, 2).float().to(device)
    loss = LocalGlobalLoss(K, GLOBAL_GRID**2).to(device)
    reference = ReferenceLocalGlobalLoss(loss).to(device)
    on_device = {pair: m.to(device) for pair, m in matches.items()}
    teacher_gpu = [t.float().to(device) for t in teacher]

    def run(module: torch.nn.Module) -> tuple[Tensor, Tensor]:
        tokens = [s.float().to(device).requires_grad_() for s in student]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            heads = (head_s, head_s), (head_t, head_t)
            out = module(tokens, teacher_gpu, *heads, T_T, matches=on_device)
        out.loss.backward()
        return out.loss.detach().float(), torch.cat([t.grad.flatten() for t in tokens])

    ours, ours_grad = run(loss)
    theirs, theirs_grad = run(reference)
    assert ours.is_cuda and torch.isfinite(ours)
    torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=1e-3)
    cosine = torch.nn.functional.cosine_similarity(ours_grad, theirs_grad, dim=0)
    assert cosine.item() > 0.99


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"weights": {"masked": 1.0}}, "not masked"),
        ({"weights": {"koleo": 0.1}}, "not koleo"),
        ({"centring": "sinkhorn"}, "centring=sinkhorn"),
    ],
)
def test_reference_has_only_the_papers_terms(options: dict[str, object], fragment: str) -> None:
    loss = LocalGlobalLoss(K, GLOBAL_GRID**2, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=fragment):
        ReferenceLocalGlobalLoss(loss)
