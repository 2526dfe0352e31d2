"""The Triton kernels of the factored distillation, against float64 formulas and the loops.

Without a CUDA device they run in Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET``); its bf16 ``tl.dot`` is wrong, so bf16 is left to the ``cuda`` tests.
"""

from __future__ import annotations

import pytest
import torch
from test_losses_local_global import T_T, _case, _make_loss

from patchdino.losses.factored import TORCH_PASSES, factored_distillation
from patchdino.losses.kernel import kernel_problem, resolve_kernel

triton_distill = pytest.importorskip("patchdino.losses.triton_distill")
pytestmark = pytest.mark.triton

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
TOLERANCE = {torch.float32: 2e-4, torch.float16: 3e-2, torch.bfloat16: 6e-2}
"""Largest error relative to the reference's scale, per input dtype."""


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    scale = want.abs().max().clamp_min(1.0)
    error = (got.double().cpu() - want).abs().max() / scale
    assert error <= TOLERANCE[dtype], f"error {float(error):.2e} for {dtype}"


def _reference(
    q: torch.Tensor, w: torch.Tensor, scale: float, bias: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Float64 softmax rows of ``(q @ w.T - table[rows]) * scale``, ``(R, K)``."""
    s = q.double().cpu() @ w.double().cpu().T
    if bias is not None:
        s = s - bias[0].double().cpu()[bias[1].cpu()]
    return torch.softmax(s * scale, dim=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("rows", "keys", "dim"), [(0, 64, 32), (1, 2000, 32), (37, 3001, 32), (70, 1000, 256)]
)
@pytest.mark.parametrize("biased", [False, True])
def test_row_and_column_passes_equal_the_softmax(
    dtype: torch.dtype, rows: int, keys: int, dim: int, biased: bool
) -> None:
    g = torch.Generator().manual_seed(rows + keys)
    q = torch.nn.functional.normalize(torch.randn(rows, dim, generator=g), dim=1)
    w = torch.nn.functional.normalize(torch.randn(keys, dim, generator=g), dim=1)
    v = torch.randn(keys, dim, generator=g)
    grads = torch.randn(rows, dim, generator=g)
    bias = None
    if biased:  # a large centre, several rows of it
        table = 40.0 * torch.randn(3, keys, generator=g).to(DEVICE)
        bias = (table, torch.randint(0, 3, (rows,), generator=g).to(DEVICE))
    scale = 1 / 0.04
    args = [t.to(DEVICE, dtype) for t in (q, w, v)]
    lse, out = triton_distill.softmax_rows(*args, scale, bias)
    p = _reference(args[0], args[1], scale, bias)
    s = (args[0].double().cpu() @ args[1].double().cpu().T) * scale
    if bias is not None:
        s = s - bias[0].double().cpu()[bias[1].cpu()] * scale
    assert lse.shape == (rows,) and out.shape == (rows, dim)
    if rows:
        _close(lse, torch.logsumexp(s, dim=1), dtype)
        _close(out, p @ args[2].double().cpu(), dtype)
    columns = triton_distill.softmax_columns(args[0], args[1], lse, grads.to(DEVICE), scale, bias)
    _close(columns, p.T @ grads.to(dtype).double(), dtype)


def test_small_blocks_cover_ragged_tiles() -> None:
    """Several row blocks and key tiles, none of them full."""
    g = torch.Generator().manual_seed(3)
    q, w, v, grads = (torch.randn(n, 32, generator=g) for n in (45, 150, 150, 45))
    table, table_rows = torch.randn(2, 150, generator=g), torch.randint(0, 2, (45,), generator=g)
    bias = (table.to(DEVICE), table_rows.to(DEVICE))
    q, w, v, grads = (t.to(DEVICE) for t in (q, w, v, grads))
    tile = triton_distill.Tile(16, 32, 4)
    lse, out = triton_distill.softmax_rows(q, w, v, 2.0, bias, tile)
    p = _reference(q, w, 2.0, bias)
    _close(out, p @ v.double().cpu(), torch.float32)
    columns = triton_distill.softmax_columns(q, w, lse, grads, 2.0, bias, tile)
    _close(columns, p.T @ grads.double().cpu(), torch.float32)


class _Table:
    """A centring that subtracts ``table[rows]`` (what the EMA centre and Sinkhorn do)."""

    def __init__(self, table: torch.Tensor, rows: torch.Tensor) -> None:
        self.table, self.rows = table, rows

    def prepare(self, features: torch.Tensor, weight: torch.Tensor, temperature: float) -> None:
        pass

    def __call__(self, logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return logits.to(self.table.dtype) - self.table[self.rows[start:end]]

    def offsets(
        self, features: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table, self.rows


def _loop_loss(
    f: torch.Tensor,
    w: torch.Tensor,
    tf: torch.Tensor,
    tw: torch.Tensor,
    centring: _Table,
    partners: torch.Tensor,
    weights: torch.Tensor,
    t_t: float,
    t_s: float,
) -> torch.Tensor:
    """The loss pair by pair, from its definition, in float64."""
    targets = torch.softmax((tf @ tw.T - centring.table[centring.rows]) / t_t, dim=1)
    log_probs = torch.log_softmax(f @ w.T / t_s, dim=1)
    total = f.new_zeros(())
    for b in range(f.shape[0]):
        for m in range(partners.shape[1]):
            a = int(partners[b, m])
            total = total - weights[b, m] * (targets[a] * log_probs[b]).sum()
    return total


@pytest.mark.parametrize("dim", [32, 256])
def test_loss_and_gradients_equal_the_pair_loop(dim: int) -> None:
    """Student rows with 0, 1 and 2+ teacher partners, T_t = 0.04, a large centre."""
    g = torch.Generator().manual_seed(dim)
    num_s, num_t, keys = 23, 11, 1500
    f = torch.nn.functional.normalize(
        torch.randn(num_s, dim, generator=g, dtype=torch.float64), dim=1
    )
    w = torch.randn(keys, dim, generator=g, dtype=torch.float64)
    tf = torch.nn.functional.normalize(
        torch.randn(num_t, dim, generator=g, dtype=torch.float64), dim=1
    )
    tw = torch.randn(keys, dim, generator=g, dtype=torch.float64)
    partners = torch.randint(0, num_t, (num_s, 3), generator=g)
    weights = torch.rand(num_s, 3, generator=g, dtype=torch.float64)
    weights[0] = 0  # no partner
    weights[1, 1:] = 0  # one partner
    centring = _Table(
        30 * torch.randn(4, keys, generator=g, dtype=torch.float64),
        torch.randint(0, 4, (num_t,), generator=g),
    )
    want_f, want_w = f.clone().requires_grad_(), w.clone().requires_grad_()
    expected = _loop_loss(want_f, want_w, tf, tw, centring, partners, weights, 0.04, 0.1)
    expected.backward()
    got_f = f.float().to(DEVICE).requires_grad_()
    got_w = w.float().to(DEVICE).requires_grad_()
    device_centring = _Table(centring.table.float().to(DEVICE), centring.rows.to(DEVICE))
    loss = factored_distillation(
        got_f,
        got_w,
        tf.float().to(DEVICE),
        tw.float().to(DEVICE),
        device_centring,
        partners.to(DEVICE),
        weights.float().to(DEVICE),
        0.04,
        0.1,
        64,
        triton_distill.TRITON_PASSES,
    )
    loss.backward()
    _close(loss.detach(), expected.detach(), torch.float32)
    assert got_f.grad is not None and got_w.grad is not None
    _close(got_f.grad, want_f.grad, torch.float32)
    _close(got_w.grad, want_w.grad, torch.float32)
    # the factored form in PyTorch, in float64, agrees to float64 tolerance
    f64 = f.clone().requires_grad_()
    torch_loss = factored_distillation(
        f64, w, tf, tw, centring, partners, weights, 0.04, 0.1, 5, TORCH_PASSES
    )
    torch.testing.assert_close(torch_loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("centre_mode", "centring"), [("position", "ema"), ("shared", "ema"), ("shared", "sinkhorn")]
)
def test_the_loss_with_the_triton_kernel_equals_the_torch_kernel(
    centre_mode: str, centring: str
) -> None:
    """The local-global loss (CLS and matched patches, local-local pairs, a separate patch
    head, each centring and the centre's update), kernel ``triton`` against ``torch``."""

    results = []
    for kernel in ("torch", "triton"):
        case = _case(separate_patch_head=True)
        loss_fn = _make_loss(
            case, centre_mode, local_local=True, kernel=kernel, centring=centring
        ).float()
        loss_fn = loss_fn.to(DEVICE)
        student = [t.float().to(DEVICE).requires_grad_() for t in case.student]
        heads = [h.float().to(DEVICE) for h in (*case.s_heads, *case.t_heads)]
        out = loss_fn(
            student,
            [t.float().to(DEVICE) for t in case.teacher],
            (heads[0], heads[1]),
            (heads[2], heads[3]),
            T_T,
            matches=case.matches,
            teacher_local_tokens=[t.float().to(DEVICE) for t in case.teacher_local],
        )
        grads = torch.autograd.grad(out.loss, [*student, *heads[0].parameters()])
        results.append((out, grads, loss_fn.centre.centre.clone()))
    (want, want_grads, want_centre), (got, got_grads, got_centre) = results
    for name in want.terms:
        _close(got.terms[name], want.terms[name].double().cpu(), torch.float32)
    for g_got, g_want in zip(got_grads, want_grads):
        _close(g_got, g_want.double().cpu(), torch.float32)
    _close(got_centre, want_centre.double().cpu(), torch.float32)


def test_kernel_choice_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_kernel("auto", "cpu") == "torch"
    assert resolve_kernel("chunked", "cpu") == "chunked"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    problem = kernel_problem("triton", "cpu")
    assert problem is not None and problem.startswith("loss.kernel=triton needs a CUDA device")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_kernel("triton", "cpu")
    assert kernel_problem("fastest", "cpu") == (
        "loss.kernel must be one of auto, torch, chunked, triton, got 'fastest'"
    )


@pytest.mark.parametrize("dim", [32, 256])
def test_every_tile_the_tuner_may_choose_gives_the_softmax(dim: int) -> None:
    """Each tile of the space (the default first), with ragged row blocks and key tiles."""
    g = torch.Generator().manual_seed(dim)
    q, w, v, grads = (torch.randn(n, dim, generator=g) for n in (37, 300, 300, 37))
    table, table_rows = torch.randn(2, 300, generator=g), torch.randint(0, 2, (37,), generator=g)
    bias = (table.to(DEVICE), table_rows.to(DEVICE))
    q, w, v, grads = (t.to(DEVICE) for t in (q, w, v, grads))
    p = _reference(q, w, 2.0, bias)
    space = triton_distill.tile_space(dim)
    if not CUDA:  # off a GPU an untuned launch takes the default, the space's first tile
        triton_distill.softmax_rows(q, w, v, 2.0, bias)
        assert triton_distill.TUNER.chosen[("row", (0, 0), "float32", dim, 512, True)] == space[0]
    for tile in space:
        lse, out = triton_distill.softmax_rows(q, w, v, 2.0, bias, tile)
        _close(out, p @ v.double().cpu(), torch.float32)
        columns = triton_distill.softmax_columns(q, w, lse, grads, 2.0, bias, tile)
        _close(columns, p.T @ grads.double().cpu(), torch.float32)


def test_the_tuner_times_each_tile_once_keeps_the_fastest_and_logs_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    space = triton_distill.tile_space(256)
    cost = dict(zip(space, (3.0, 1.0, 2.0)))
    ran: list[object] = []

    def timer(call: object) -> float:
        call()  # type: ignore[operator]
        return cost[ran[-1]]  # type: ignore[index]

    tuner = triton_distill.TileTuner(timer)
    key = ("row", (9, 0), "bfloat16", 256, 65536, True)
    with caplog.at_level("INFO", logger=triton_distill.__name__):
        assert tuner.tile(key, space, ran.append, on_gpu=True) == space[1]
        assert tuner.tile(key, space, ran.append, on_gpu=True) == space[1]
    assert ran == list(space)  # each timed once; the second call reuses the choice
    logged = [r.getMessage() for r in caplog.records if "loss.kernel=triton" in r.getMessage()]
    assert len(logged) == 1 and "d=256" in logged[0] and "block_m=32" in logged[0]
    # Off a GPU: the default tile, nothing timed.
    other = ("column", (0, 0), "float32", 32, 64, False)
    assert tuner.tile(other, space, ran.append, on_gpu=False) == space[0] and len(ran) == 3


def test_a_tile_too_large_for_the_card_is_passed_over() -> None:
    space = triton_distill.tile_space(64)

    def timer(call: object) -> float:
        call()  # type: ignore[operator]
        return 1.0

    def run(tile: object) -> None:
        if tile == space[0]:
            raise triton_distill.triton.runtime.errors.OutOfResources(300_000, 232_448, "shared")

    key = ("row", (8, 0), "float16", 64, 1024, True)
    assert triton_distill.TileTuner(timer).tile(key, space, run, on_gpu=True) == space[1]
