"""Local-global loss against a plainly written loop over samples, view pairs and token pairs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from patchdino.data.geometry import ViewGeometry
from patchdino.losses.local_global import LocalGlobalLoss
from patchdino.matching.types import PatchMatches
from patchdino.models.head import DINOHead

B, D, K, K_PATCH = 3, 12, 20, 14
GLOBAL_GRID, LOCAL_GRID = 4, 2
T_S, T_T = 0.1, 0.05


@dataclass
class Case:
    student: list[Tensor]
    teacher: list[Tensor]
    teacher_local: list[Tensor]
    matches: dict[tuple[int, int], PatchMatches]
    s_heads: tuple[DINOHead, DINOHead]
    t_heads: tuple[DINOHead, DINOHead]
    num_global: int


def _head(k: int, seed: int) -> DINOHead:
    torch.manual_seed(seed)
    return DINOHead(D, k, hidden_dim=16, bottleneck_dim=6, nlayers=2).double()


def _random_matches(n_a: int, n_b: int, g: torch.Generator) -> PatchMatches:
    k = 5
    index_a = torch.randint(0, n_a, (B, k), generator=g)
    index_b = torch.randint(0, n_b, (B, k), generator=g)
    valid = torch.rand(B, k, generator=g) < 0.6
    valid[1] = False  # one sample without any matched patch
    return PatchMatches(index_a, index_b, valid)


def _case(separate_patch_head: bool, num_local: int = 2, seed: int = 0) -> Case:
    g = torch.Generator().manual_seed(seed)
    grids = [GLOBAL_GRID] * 2 + [LOCAL_GRID] * num_local
    student = [
        torch.randn(B, 1 + n * n, D, generator=g, dtype=torch.float64).requires_grad_()
        for n in grids
    ]
    teacher_all = [torch.randn(B, 1 + n * n, D, generator=g, dtype=torch.float64) for n in grids]
    matches = {
        (i, v): _random_matches(grids[i] ** 2, grids[v] ** 2, g)
        for i, v in itertools.permutations(range(len(grids)), 2)
    }
    s_cls, t_cls = _head(K, 1), _head(K, 2)
    s_patch = _head(K_PATCH, 3) if separate_patch_head else s_cls
    t_patch = _head(K_PATCH, 4) if separate_patch_head else t_cls
    return Case(
        student, teacher_all[:2], teacher_all[2:], matches, (s_cls, s_patch), (t_cls, t_patch), 2
    )


def _make_loss(case: Case, centre_mode: str, **kwargs: object) -> LocalGlobalLoss:
    separate = case.s_heads[1] is not case.s_heads[0]
    loss = LocalGlobalLoss(
        K,
        GLOBAL_GRID**2,
        patch_out_dim=K_PATCH if separate else None,
        num_local_patches=LOCAL_GRID**2,
        student_temp=T_S,
        centre_mode=centre_mode,
        **kwargs,  # type: ignore[arg-type]
    ).double()
    torch.manual_seed(5)
    for centre in (loss.centre, loss.patch_centre):
        if centre is not None:
            centre.centre.normal_()  # a non-zero centre, so that its role is tested
    return loss


def _centre_row(position: int, kind: int, mode: str) -> int:
    if position == 0:
        return 0
    if mode == "shared":
        return 1
    return position + (GLOBAL_GRID**2 if kind == 1 else 0)


def _reference(
    case: Case,
    loss: LocalGlobalLoss,
    patch_loss: bool,
    weighting: str,
    cls_weight: float,
    local_local: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean over samples and view pairs of the per-pair loss, one token pair at a time.

    Returns the total loss and its CLS and patch parts.
    """
    teachers = case.teacher + (case.teacher_local if local_local else [])
    views = len(case.student)
    pairs = [(i, v) for i in range(case.num_global) for v in range(views) if v != i]
    if local_local:
        pairs += [(i, v) for i, v in itertools.permutations(range(case.num_global, views), 2)]
    cls_centre = loss.centre.centre
    patch_centre = (loss.patch_centre or loss.centre).centre
    total_cls = torch.zeros((), dtype=torch.float64)
    total_patch = torch.zeros((), dtype=torch.float64)
    for b in range(B):
        for i, v in pairs:
            kind = 0 if i < case.num_global else 1
            token_pairs = [(0, 0)]
            if patch_loss:
                token_pairs += [(1 + a, 1 + c) for a, c in case.matches[(i, v)].pairs(b)]
            ces = []
            for a, c in token_pairs:
                head = 0 if a == 0 else 1
                centre = cls_centre if a == 0 else patch_centre
                t = case.t_heads[head](teachers[i][b, a])
                p = torch.softmax((t - centre[_centre_row(a, kind, loss.centre.mode)]) / T_T, 0)
                log_q = torch.log_softmax(case.s_heads[head](case.student[v][b, c]) / T_S, 0)
                ces.append(-(p * log_q).sum())
            n = len(ces)
            if not patch_loss:
                total_cls = total_cls + ces[0]
            elif weighting == "token":
                total_cls = total_cls + ces[0] / n
                total_patch = total_patch + sum(ces[1:], torch.zeros(())) / n
            else:
                total_cls = total_cls + cls_weight * ces[0]
                if n > 1:
                    total_patch = total_patch + (1 - cls_weight) * sum(ces[1:]) / (n - 1)
    scale = B * len(pairs)
    return (total_cls + total_patch) / scale, total_cls / scale, total_patch / scale


def _reference_centres(case: Case, loss: LocalGlobalLoss, local_local: bool, momentum: float):
    """Centres after one masked EMA step over the teacher tokens that took part in a pair."""
    teachers = case.teacher + (case.teacher_local if local_local else [])
    used: set[tuple[int, int, int]] = set()
    for (i, v), m in case.matches.items():
        if i >= len(teachers) or (i >= case.num_global and not local_local):
            continue
        if i >= case.num_global and v < case.num_global:
            continue  # local teacher -> global student is not a pair
        for b in range(B):
            used.add((b, i, 0))
            used.update((b, i, 1 + a) for a, _ in m.pairs(b))
    results = []
    for centre_module, is_cls_only in (
        (loss.centre, loss.patch_centre is not None),
        (loss.patch_centre, False),
    ):
        if centre_module is None:
            continue
        old = centre_module.centre.clone()
        sums = torch.zeros_like(old)
        counts = torch.zeros(old.shape[0], dtype=torch.float64)
        for b, i, a in used:
            if a == 0 and centre_module is loss.patch_centre:
                continue
            if a > 0 and is_cls_only:
                continue
            head = case.t_heads[0] if a == 0 else case.t_heads[1]
            kind = 0 if i < case.num_global else 1
            row = _centre_row(a, kind, centre_module.mode)
            sums[row] += head(teachers[i][b, a])
            counts[row] += 1
        new = old.clone()
        seen = counts > 0
        new[seen] = momentum * old[seen] + (1 - momentum) * sums[seen] / counts[seen, None]
        results.append(new)
    return results


CONFIGS = [
    # patch_loss, weighting, centre_mode, separate_head, local_local
    (True, "token", "position", False, False),
    (True, "token", "shared", False, False),
    (True, "split", "position", False, False),
    (True, "split", "shared", True, False),
    (True, "token", "position", True, False),
    (True, "token", "position", False, True),
    (True, "split", "shared", False, True),
    (True, "token", "position", True, True),
    (False, "token", "position", False, False),
    (False, "split", "shared", False, False),
]


@pytest.mark.parametrize(
    ("patch_loss", "weighting", "centre_mode", "separate", "local_local"), CONFIGS
)
@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize("kernel", ["chunked", "torch"])
def test_loss_gradients_and_centre_equal_the_loop(
    patch_loss: bool,
    weighting: str,
    centre_mode: str,
    separate: bool,
    local_local: bool,
    chunk_size: int | None,
    kernel: str,
) -> None:
    case = _case(separate)
    loss_fn = _make_loss(
        case,
        centre_mode,
        patch_loss=patch_loss,
        cls_weighting=weighting,
        cls_weight=0.3,
        local_local=local_local,
        chunk_size=chunk_size,
        kernel=kernel,
    )
    expected, expected_cls, expected_patch = _reference(
        case, loss_fn, patch_loss, weighting, 0.3, local_local
    )
    expected_centres = _reference_centres(case, loss_fn, local_local, 0.9) if patch_loss else []
    out = loss_fn(
        case.student,
        case.teacher,
        case.s_heads,
        case.t_heads,
        T_T,
        matches=case.matches,
        teacher_local_tokens=case.teacher_local if local_local else (),
    )
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.terms["loss_cls"], expected_cls.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        out.terms["loss_patch"], expected_patch.detach(), rtol=1e-10, atol=1e-12
    )
    params = [*case.student, *case.s_heads[0].parameters()]
    if separate:
        params += list(case.s_heads[1].parameters())
    got = torch.autograd.grad(out.loss, params)
    want = torch.autograd.grad(expected, params)
    for g_got, g_want in zip(got, want):
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)
    for centre_module, centre_expected in zip(
        [c for c in (loss_fn.centre, loss_fn.patch_centre) if c is not None], expected_centres
    ):
        torch.testing.assert_close(centre_module.centre, centre_expected, rtol=1e-10, atol=1e-12)


def test_without_patch_loss_it_is_dino() -> None:
    case = _case(False)
    loss_fn = _make_loss(case, "position", patch_loss=False)
    centre = loss_fn.centre.centre.clone()  # (1, K)
    assert centre.shape == (1, K)
    out = loss_fn(case.student, case.teacher, case.s_heads, case.t_heads, T_T)
    # DINO: teacher global i vs student view v != i, CLS only, mean over pairs and batch.
    t_out = [torch.softmax((case.t_heads[0](t[:, 0]) - centre) / T_T, dim=-1) for t in case.teacher]
    s_out = [torch.log_softmax(case.s_heads[0](s[:, 0]) / T_S, dim=-1) for s in case.student]
    terms = [
        (-(q * s_out[v]).sum(dim=-1)).mean()
        for i, q in enumerate(t_out)
        for v in range(len(s_out))
        if v != i
    ]
    expected = sum(terms) / len(terms)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    assert out.terms["loss_patch"].item() == 0.0
    # DINO's centre update: mean of the teacher CLS outputs over batch and global views.
    mean = torch.cat([case.t_heads[0](t[:, 0]) for t in case.teacher]).mean(dim=0, keepdim=True)
    torch.testing.assert_close(loss_fn.centre.centre, 0.9 * centre + 0.1 * mean)


def test_real_matcher_and_swapped_global_pair() -> None:
    from patchdino.matching.match import match_patches

    g = torch.Generator().manual_seed(3)
    case = _case(False, seed=3)

    def geometry(size: int, scale: float) -> ViewGeometry:
        side = 40 * scale
        top, left = (
            torch.rand(B, generator=g) * (40 - side),
            torch.rand(B, generator=g) * (40 - side),
        )
        boxes = torch.stack([top, left, torch.full((B,), side), torch.full((B,), side)], 1)
        return ViewGeometry(boxes.double(), torch.rand(B, generator=g) < 0.5, size, 4)

    geoms = [geometry(16, 0.8), geometry(16, 0.7), geometry(8, 0.4), geometry(8, 0.3)]
    case.matches = {
        (i, v): match_patches(geoms[i], geoms[v], "nearest")
        for i in range(2)
        for v in range(4)
        if v != i and (i, v) != (1, 0)
    }
    loss_fn = _make_loss(case, "position")
    out = loss_fn(
        case.student,
        case.teacher,
        case.s_heads,
        case.t_heads,
        T_T,
        matches=case.matches,
        update_centre=False,
    )
    case.matches[(1, 0)] = case.matches[(0, 1)].swap()
    expected, _, _ = _reference(case, loss_fn, True, "token", 0.5, False)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    counts = torch.stack(
        [case.matches[(i, v)].counts for i in range(2) for v in range(4) if v != i]
    )
    torch.testing.assert_close(out.statistics["matched_patches"], counts.double().mean())


def test_no_centre_update_when_asked() -> None:
    case = _case(False)
    loss_fn = _make_loss(case, "position")
    before = loss_fn.centre.centre.clone()
    loss_fn(
        case.student,
        case.teacher,
        case.s_heads,
        case.t_heads,
        T_T,
        matches=case.matches,
        update_centre=False,
    )
    torch.testing.assert_close(loss_fn.centre.centre, before)


def test_bad_inputs_are_rejected() -> None:
    case = _case(False)
    loss_fn = _make_loss(case, "position")
    args = (case.s_heads, case.t_heads, T_T)
    with pytest.raises(ValueError, match="no matches for view pair"):
        loss_fn(case.student, case.teacher, *args, matches={})
    bad = dict(case.matches)
    m = bad[(0, 2)]
    bad[(0, 2)] = PatchMatches(m.index_a, torch.full_like(m.index_b, 7), m.valid)
    with pytest.raises(ValueError, match="out of range"):
        loss_fn(case.student, case.teacher, *args, matches=bad)
    with pytest.raises(ValueError, match="teacher_temp"):
        loss_fn(case.student, case.teacher, case.s_heads, case.t_heads, 0.0, matches=case.matches)
    with pytest.raises(ValueError, match="differ in length"):
        short = [case.teacher[0], case.teacher[0][:, :5]]
        loss_fn(case.student, short, *args, matches=case.matches)
    with pytest.raises(ValueError, match="teacher local-view"):
        loss_fn(
            case.student,
            case.teacher,
            *args,
            matches=case.matches,
            teacher_local_tokens=case.teacher_local,
        )
    with pytest.raises(ValueError, match="num_local_patches"):
        LocalGlobalLoss(K, 16, local_local=True)
    with pytest.raises(ValueError, match="cls_weighting"):
        LocalGlobalLoss(K, 16, cls_weighting="mean")


def test_single_global_view() -> None:
    case = _case(False, seed=4)
    case.teacher, case.num_global = case.teacher[:1], 1
    loss_fn = _make_loss(case, "position", cls_weighting="split", cls_weight=0.4)
    expected, _, _ = _reference(case, loss_fn, True, "split", 0.4, False)
    out = loss_fn(case.student, case.teacher, case.s_heads, case.t_heads, T_T, matches=case.matches)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)


def test_plan_built_ahead_gives_the_same_loss() -> None:
    case = _case(True, seed=5)
    loss_fn = _make_loss(case, "shared", chunk_size=7)
    num_tokens = [s.shape[1] for s in case.student]
    plan = loss_fn.plan(case.matches, num_tokens, B, 2)
    args = (case.s_heads, case.t_heads, T_T)
    direct = loss_fn(case.student, case.teacher, *args, matches=case.matches, update_centre=False)
    planned = loss_fn(case.student, case.teacher, *args, plan=plan, update_centre=False)
    torch.testing.assert_close(planned.loss, direct.loss, rtol=0, atol=0)
    torch.testing.assert_close(sum(planned.terms.values()), planned.loss.detach())
    with pytest.raises(ValueError, match="not both"):
        loss_fn(case.student, case.teacher, *args, plan=plan, matches=case.matches)
    with pytest.raises(ValueError, match="pair plan was made for"):
        loss_fn(case.student[:3], case.teacher, *args, plan=plan)


def test_batch_without_any_match_equals_dino() -> None:
    case = _case(False, seed=6)
    case.matches = {
        key: PatchMatches(m.index_a, m.index_b, torch.zeros_like(m.valid))
        for key, m in case.matches.items()
    }
    args = (case.s_heads, case.t_heads, T_T)
    full, plain = _make_loss(case, "position"), _make_loss(case, "position", patch_loss=False)
    plain.centre.centre.copy_(full.centre.centre[:1])  # the same CLS centre
    out = full(case.student, case.teacher, *args, matches=case.matches)
    dino = plain(case.student, case.teacher, *args)
    torch.testing.assert_close(out.loss, dino.loss, rtol=1e-12, atol=1e-12)
    assert out.terms["loss_patch"].item() == 0.0 and out.statistics["matched_patches"].item() == 0.0
    out.loss.backward()  # gradients flow although no patch token is selected


def _all_token_centres(
    case: Case, loss: LocalGlobalLoss, local_local: bool, momentum: float
) -> list[Tensor]:
    """Centres after one EMA step over every token of every teacher view, one at a time."""
    teachers = case.teacher + (case.teacher_local if local_local else [])
    results = []
    for centre_module in (loss.centre, loss.patch_centre):
        if centre_module is None:
            continue
        takes_cls = centre_module is loss.centre
        takes_patches = centre_module is (loss.patch_centre or loss.centre)
        old = centre_module.centre.clone()
        sums = torch.zeros_like(old)
        counts = torch.zeros(old.shape[0], dtype=torch.float64)
        for i, tokens in enumerate(teachers):
            kind = 0 if i < case.num_global else 1
            for b in range(B):
                for a in range(tokens.shape[1]):
                    if (a == 0 and not takes_cls) or (a > 0 and not takes_patches):
                        continue
                    head = case.t_heads[0] if a == 0 else case.t_heads[1]
                    row = _centre_row(a, kind, centre_module.mode)
                    sums[row] += head(tokens[b, a])
                    counts[row] += 1
        new = old.clone()
        seen = counts > 0
        new[seen] = momentum * old[seen] + (1 - momentum) * sums[seen] / counts[seen, None]
        results.append(new)
    return results


@pytest.mark.parametrize(
    ("weighting", "centre_mode", "separate", "local_local"),
    [c[1:] for c in CONFIGS if c[0]],
)
def test_centre_on_all_tokens_equals_the_loop(
    weighting: str, centre_mode: str, separate: bool, local_local: bool
) -> None:
    case = _case(separate, seed=8)
    loss_fn = _make_loss(
        case,
        centre_mode,
        cls_weighting=weighting,
        local_local=local_local,
        chunk_size=5,
        centre_tokens="all",
    )
    expected, _, _ = _reference(case, loss_fn, True, weighting, 0.5, local_local)
    expected_centres = _all_token_centres(case, loss_fn, local_local, 0.9)
    out = loss_fn(
        case.student,
        case.teacher,
        case.s_heads,
        case.t_heads,
        T_T,
        matches=case.matches,
        teacher_local_tokens=case.teacher_local if local_local else (),
    )
    # The loss uses the centre as before; only the statistics of its update change.
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    centres = [c for c in (loss_fn.centre, loss_fn.patch_centre) if c is not None]
    for centre_module, centre_expected in zip(centres, expected_centres, strict=True):
        torch.testing.assert_close(centre_module.centre, centre_expected, rtol=1e-10, atol=1e-12)


def test_centre_on_all_tokens_reaches_positions_no_pair_uses() -> None:
    case = _case(False, seed=9)
    case.matches = {
        key: PatchMatches(m.index_a, m.index_b, torch.zeros_like(m.valid))
        for key, m in case.matches.items()
    }
    args = (case.s_heads, case.t_heads, T_T)
    matched = _make_loss(case, "position")
    every = _make_loss(case, "position", centre_tokens="all")
    before = matched.centre.centre.clone()
    matched(case.student, case.teacher, *args, matches=case.matches)
    every(case.student, case.teacher, *args, matches=case.matches)
    patch_rows = slice(1, 1 + GLOBAL_GRID**2)
    torch.testing.assert_close(matched.centre.centre[patch_rows], before[patch_rows])
    assert (every.centre.centre[patch_rows] != before[patch_rows]).all()
    torch.testing.assert_close(every.centre.centre[0], matched.centre.centre[0])
    with pytest.raises(ValueError, match="centre_tokens"):
        LocalGlobalLoss(K, 16, centre_tokens="some")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kernel", ["chunked", "torch", "triton"])
def test_cuda_matches_cpu_and_runs_under_autocast(kernel: str) -> None:
    """Each kernel on CUDA against the float64 loss on the CPU: fp32 closely, bf16 within
    bf16's precision (loss and gradients)."""
    case = _case(True, seed=7)
    loss_fn = _make_loss(case, "position", chunk_size=6, kernel=kernel)
    args = (case.s_heads, case.t_heads, T_T)
    student = [s.detach().requires_grad_() for s in case.student]
    out = loss_fn(student, case.teacher, *args, matches=case.matches, update_centre=False)
    expected, expected_grads = out.loss, torch.autograd.grad(out.loss, student)
    device = torch.device("cuda")
    loss_fn = loss_fn.to(device).float()
    for head in {*case.s_heads, *case.t_heads}:
        head.to(device).float()
    student = [s.detach().to(device).float().requires_grad_() for s in case.student]
    teacher = [t.to(device).float() for t in case.teacher]
    for precision, tolerance in (("fp32", 1e-4), ("bf16", 5e-2)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            got = loss_fn(student, teacher, *args, matches=case.matches, update_centre=False)
        grads = torch.autograd.grad(got.loss, student)
        error = abs(got.loss.item() - expected.item()) / abs(expected.item())
        assert error < tolerance, (precision, error)
        for g_got, g_want in zip(grads, expected_grads):
            scale = g_want.abs().max().clamp_min(1e-12)
            error = float((g_got.double().cpu() - g_want).abs().max() / scale)
            assert error < tolerance, (precision, error)
