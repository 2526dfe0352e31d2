"""The factored distillation's two passes as fused Triton kernels (``loss.kernel=triton``).

:mod:`patchdino.losses.factored` reduces a problem to passes over ``K``-wide rows of the form

    p_r = softmax((q_r . w_k - b_rk) * scale  over k),   q_r a d-wide row, w_k a row of W,

followed by ``p_r @ V`` (a ``d``-wide output per row) and ``sum_r p_r^T G_r`` (a ``(K, d)``
output). These are the shapes of attention: queries ``q``, keys ``W``, values ``V``. Two
kernels compute them without writing any ``K``-wide row to memory:

- :func:`_row_kernel` (attention's forward): one program per block of rows walks the ``K``
  keys in tiles with an online softmax, giving each row's log-sum-exp and ``p_r @ V``;
- :func:`_column_kernel` (attention's ``dV``): one program per tile of keys walks the rows,
  recomputes ``p`` from the stored log-sum-exp and accumulates ``p^T G``; no atomics.

The bias ``b_rk`` is a row of a small table chosen per row (the EMA centre's rows, or
Sinkhorn-Knopp's offsets: :meth:`~patchdino.losses.centring.TeacherCentring.offsets`), read
tile by tile. Matrix products run in the inputs' dtype (bf16 under autocast), softmax and
accumulators in float32. Teacher side: ``q`` = teacher features, ``W`` = the teacher's
weight, ``V`` = the student's weight, ``G`` = the pair-weighted student features; student
side: ``q`` = student features, ``W = V`` = the student's weight, ``G`` = the features times
each row's pair mass.

Runs on CUDA, and on the CPU in Triton's interpreter (``TRITON_INTERPRET=1``, for tests;
its bf16 ``tl.dot`` is wrong, so test fp32 or fp16 there).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from patchdino.losses.centring import TeacherCentring
from patchdino.losses.factored import Passes

_LOG = logging.getLogger(__name__)


@triton.jit
def _tile(ptr, index, stride, index_ok, cols, col_ok):  # type: ignore[no-untyped-def]
    """Rows ``index`` of a row-major matrix, columns ``cols``; zeros outside."""
    return tl.load(
        ptr + index[:, None] * stride + cols[None, :],
        mask=index_ok[:, None] & col_ok[None, :],
        other=0.0,
    )


@triton.jit
def _table_rows(bias_rows_ptr, rows, row_ok, has_bias: tl.constexpr):  # type: ignore[no-untyped-def]
    """Each row's row of the bias table (zeros without a bias)."""
    if has_bias:
        table_rows = tl.load(bias_rows_ptr + rows, mask=row_ok, other=0)
    else:
        table_rows = tl.zeros(rows.shape, dtype=tl.int64)
    return table_rows


@triton.jit
def _logits(  # type: ignore[no-untyped-def]
    q, w, bias_ptr, table_rows, row_ok, keys, key_ok, stride_bias, has_bias: tl.constexpr
):
    """``q @ w.T - bias[table_rows, keys]`` in float32 (not yet scaled)."""
    s = tl.dot(q, tl.trans(w))
    if has_bias:
        b = tl.load(
            bias_ptr + table_rows[:, None] * stride_bias + keys[None, :],
            mask=row_ok[:, None] & key_ok[None, :],
            other=0.0,
        )
        s = s - b.to(tl.float32)
    return s


@triton.jit
def _row_kernel(  # type: ignore[no-untyped-def]  # Triton reads the annotations
    q_ptr,
    w_ptr,
    v_ptr,
    bias_ptr,
    bias_rows_ptr,
    lse_ptr,
    out_ptr,
    num_rows,
    num_keys,
    dim,
    scale,
    stride_q,
    stride_w,
    stride_v,
    stride_bias,
    stride_out,
    has_bias: tl.constexpr,
    block_m: tl.constexpr,
    block_k: tl.constexpr,
    block_d: tl.constexpr,
):
    """Per row ``r``: ``lse_r = logsumexp_k s_rk`` and ``out_r = softmax(s_r) @ V``, with
    ``s_rk = (q_r . w_k - bias[bias_rows[r], k]) * scale``."""
    rows = tl.program_id(0) * block_m + tl.arange(0, block_m)
    cols = tl.arange(0, block_d)
    row_ok = rows < num_rows
    col_ok = cols < dim
    q = _tile(q_ptr, rows, stride_q, row_ok, cols, col_ok)
    table_rows = _table_rows(bias_rows_ptr, rows, row_ok, has_bias)
    peak = tl.full((block_m,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((block_m,), dtype=tl.float32)
    acc = tl.zeros((block_m, block_d), dtype=tl.float32)
    for start in range(0, num_keys, block_k):
        keys = start + tl.arange(0, block_k)
        key_ok = keys < num_keys
        w = _tile(w_ptr, keys, stride_w, key_ok, cols, col_ok)
        s = _logits(q, w, bias_ptr, table_rows, row_ok, keys, key_ok, stride_bias, has_bias)
        s = tl.where(key_ok[None, :], s * scale, float("-inf"))
        new_peak = tl.maximum(peak, tl.max(s, axis=1))
        p = tl.exp(s - new_peak[:, None])
        rescale = tl.exp(peak - new_peak)
        total = total * rescale + tl.sum(p, axis=1)
        v = _tile(v_ptr, keys, stride_v, key_ok, cols, col_ok)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        peak = new_peak
    tl.store(lse_ptr + rows, peak + tl.log(total), mask=row_ok)
    tl.store(
        out_ptr + rows[:, None] * stride_out + cols[None, :],
        acc / total[:, None],
        mask=row_ok[:, None] & col_ok[None, :],
    )


@triton.jit
def _column_kernel(  # type: ignore[no-untyped-def]  # Triton reads the annotations
    q_ptr,
    w_ptr,
    g_ptr,
    bias_ptr,
    bias_rows_ptr,
    lse_ptr,
    out_ptr,
    num_rows,
    num_keys,
    dim,
    scale,
    stride_q,
    stride_w,
    stride_g,
    stride_bias,
    stride_out,
    has_bias: tl.constexpr,
    block_m: tl.constexpr,
    block_k: tl.constexpr,
    block_d: tl.constexpr,
):
    """Per key ``k``: ``out_k = sum_r p_rk G_r`` with ``p_rk = exp(s_rk - lse_r)`` (``s`` as in
    :func:`_row_kernel`)."""
    keys = tl.program_id(0) * block_k + tl.arange(0, block_k)
    cols = tl.arange(0, block_d)
    key_ok = keys < num_keys
    col_ok = cols < dim
    w = _tile(w_ptr, keys, stride_w, key_ok, cols, col_ok)
    acc = tl.zeros((block_k, block_d), dtype=tl.float32)
    for start in range(0, num_rows, block_m):
        rows = start + tl.arange(0, block_m)
        row_ok = rows < num_rows
        q = _tile(q_ptr, rows, stride_q, row_ok, cols, col_ok)
        table_rows = _table_rows(bias_rows_ptr, rows, row_ok, has_bias)
        s = _logits(q, w, bias_ptr, table_rows, row_ok, keys, key_ok, stride_bias, has_bias)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        p = tl.exp(s * scale - lse[:, None])
        p = tl.where(row_ok[:, None] & key_ok[None, :], p, 0.0)
        g = _tile(g_ptr, rows, stride_g, row_ok, cols, col_ok)
        acc += tl.dot(tl.trans(p.to(g.dtype)), g)
    tl.store(
        out_ptr + keys[:, None] * stride_out + cols[None, :],
        acc,
        mask=key_ok[:, None] & col_ok[None, :],
    )


@dataclass(frozen=True)
class Tile:
    """A launch configuration of both kernels.

    Attributes:
        block_m: rows per block.
        block_k: keys per tile.
        warps: warps per block.
        stages: software-pipelining stages of the loops (Triton's ``num_stages``).
    """

    block_m: int
    block_k: int
    warps: int
    stages: int = 3


def block_width(dim: int) -> int:
    """``block_d``: the feature tile, ``dim`` rounded up to a power of two (at least 16)."""
    return max(16, triton.next_power_of_2(dim))


def tile_space(dim: int) -> tuple[Tile, ...]:
    """The tiles tried for rows ``dim`` wide, the default first.

    Every one compiles for sm_80 and sm_90 without spills, and for each width one holds two
    blocks per SM on both (``python -m patchdino.bench.triton_aot --space``, docs/performance.md).
    """
    if block_width(dim) > 128:
        return (Tile(64, 32, 8), Tile(32, 32, 4, 2), Tile(16, 32, 4, 2))
    return (Tile(64, 64, 4), Tile(32, 64, 4, 2), Tile(32, 32, 4, 2))


TileKey = tuple[str, tuple[int, int], str, int, int, bool]
"""``(kernel, device capability, dtype, d, K rounded up to a power of two, bias)``."""


class TileTuner:
    """Chooses each kernel's tile on first use, once per :data:`TileKey`.

    On a GPU every tile of :func:`tile_space` runs once on the call's own inputs (the kernels
    overwrite their outputs, so the real launch after the choice is unaffected) and the fastest
    is kept for the rest of the run, logged once. Off a GPU (Triton's interpreter) the default
    tile is used and nothing is timed.

    Args:
        timer: milliseconds of one call of its argument; None uses ``triton.testing.do_bench``.

    Attributes:
        chosen: the tile of every key met so far.
    """

    def __init__(self, timer: Callable[[Callable[[], None]], float] | None = None) -> None:
        self.chosen: dict[TileKey, Tile] = {}
        self._timer = timer

    def tile(
        self,
        key: TileKey,
        space: Sequence[Tile],
        run: Callable[[Tile], None],
        on_gpu: bool,
    ) -> Tile:
        """The tile of ``key``: chosen before, else the fastest of ``space`` under ``run``."""
        if key in self.chosen:
            return self.chosen[key]
        if not on_gpu or len(space) == 1:
            self.chosen[key] = space[0]
            return space[0]
        timer = self._timer or _time_on_gpu
        times = []
        for tile in space:
            try:
                times.append(timer(functools.partial(run, tile)))
            except triton.runtime.errors.OutOfResources:  # too large for this card
                times.append(math.inf)
        best = space[min(range(len(space)), key=times.__getitem__)]
        self.chosen[key] = best
        kernel, capability, dtype, dim, keys, bias = key
        _LOG.info(
            "loss.kernel=triton: %s kernel on sm_%d%d, %s, d=%d, K<=%d, bias %s: %s "
            "(%.3f ms; the tiles tried: %s ms)",
            kernel, *capability, dtype, dim, keys, bias, best, min(times),
            ", ".join(f"{t:.3f}" for t in times),
        )  # fmt: skip
        return best


def _time_on_gpu(call: Callable[[], None]) -> float:
    return float(triton.testing.do_bench(call, warmup=5, rep=20))


TUNER = TileTuner()
"""The tiles of this process's launches."""


def softmax_rows(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    scale: float,
    bias: tuple[Tensor, Tensor] | None = None,
    tile: Tile | None = None,
) -> tuple[Tensor, Tensor]:
    """Per row: the log-sum-exp of ``s = (queries @ keys.T - bias) * scale`` and
    ``softmax(s) @ values``.

    Args:
        queries: ``(R, d)``.
        keys: ``(K, d)``, cast to the queries' dtype.
        values: ``(K, d)``, cast to the queries' dtype.
        scale: factor of the biased logits (``1 / T``).
        bias: ``(table (B, K), rows (R,) long)``: row ``r`` subtracts ``table[rows[r]]``.
        tile: the launch configuration; None lets :data:`TUNER` choose it.

    Returns:
        ``lse`` ``(R,)`` and ``(R, d)``, float32.
    """
    num_rows, dim = queries.shape
    queries = queries.contiguous()
    keys = keys.to(queries.dtype).contiguous()
    values = values.to(queries.dtype).contiguous()
    lse = torch.empty(num_rows, dtype=torch.float32, device=queries.device)
    out = torch.empty(num_rows, dim, dtype=torch.float32, device=queries.device)
    if num_rows == 0:
        return lse, out
    _launch(_row_kernel, False, queries, keys, values, lse, out, scale, bias, tile)
    return lse, out


def softmax_columns(
    queries: Tensor,
    keys: Tensor,
    lse: Tensor,
    row_grads: Tensor,
    scale: float,
    bias: tuple[Tensor, Tensor] | None = None,
    tile: Tile | None = None,
) -> Tensor:
    """``sum_r p_r^T G_r`` ``(K, d)`` for the softmax rows ``p`` of :func:`softmax_rows`.

    Args:
        queries, keys, scale, bias, tile: as given to :func:`softmax_rows`.
        lse: ``(R,)`` float32 log-sum-exp that :func:`softmax_rows` returned.
        row_grads: ``(R, d)`` ``G``, cast to the queries' dtype.

    Returns:
        ``(K, d)`` float32.
    """
    num_rows, dim = queries.shape
    queries = queries.contiguous()
    keys = keys.to(queries.dtype).contiguous()
    row_grads = row_grads.to(queries.dtype).contiguous()
    out = torch.zeros(keys.shape[0], dim, dtype=torch.float32, device=queries.device)
    if num_rows == 0:
        return out
    _launch(
        _column_kernel, True, queries, keys, row_grads, lse.contiguous(), out, scale, bias, tile
    )
    return out


def _launch(
    kernel: Any,
    over_keys: bool,
    queries: Tensor,
    keys: Tensor,
    third: Tensor,
    lse: Tensor,
    out: Tensor,
    scale: float,
    bias: tuple[Tensor, Tensor] | None,
    tile: Tile | None,
) -> None:
    """Run ``kernel`` (both take the same arguments): one program per block of rows, or per
    tile of keys (``over_keys``); ``third`` is ``V`` or ``G``. Without ``tile``,
    :data:`TUNER` picks one (timing the space on first use on a GPU)."""
    num_rows, dim = queries.shape
    table, table_rows = _bias(bias, queries)

    def run(tile: Tile) -> None:
        blocks = triton.cdiv(keys.shape[0], tile.block_k) if over_keys else None
        grid = (blocks or triton.cdiv(num_rows, tile.block_m),)
        kernel[grid](
            queries,
            keys,
            third,
            table,
            table_rows,
            lse,
            out,
            num_rows,
            keys.shape[0],
            dim,
            scale,
            queries.stride(0),
            keys.stride(0),
            third.stride(0),
            table.stride(0),
            out.stride(0),
            has_bias=bias is not None,
            block_m=tile.block_m,
            block_k=tile.block_k,
            block_d=block_width(dim),
            num_warps=tile.warps,
            num_stages=tile.stages,
        )

    if tile is None:
        on_gpu = queries.is_cuda
        capability = torch.cuda.get_device_capability(queries.device) if on_gpu else (0, 0)
        name = "column" if over_keys else "row"
        dtype = str(queries.dtype).removeprefix("torch.")
        key = (
            name,
            capability,
            dtype,
            dim,
            triton.next_power_of_2(keys.shape[0]),
            bias is not None,
        )
        tile = TUNER.tile(key, tile_space(dim), run, on_gpu)
    run(tile)


KERNELS = {"row": _row_kernel, "column": _column_kernel}
"""Every kernel of this module by name (both take the arguments :func:`_launch` passes)."""


def kernel_signature(kernel: Any, dtype: str) -> dict[str, str]:
    """Triton's signature of ``kernel`` as :func:`_launch` calls it with ``dtype`` inputs
    (``"bf16"`` or ``"fp16"``): the queries, keys and third operand in ``dtype``, the bias
    table, log-sum-exp and output in float32, the table rows int64, sizes and strides int32;
    for compiling ahead of time (:mod:`patchdino.bench.triton_aot`)."""
    fixed = {"bias_ptr": "*fp32", "lse_ptr": "*fp32", "out_ptr": "*fp32", "bias_rows_ptr": "*i64"}
    signature = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
        elif name in fixed:
            signature[name] = fixed[name]
        elif name.endswith("_ptr"):
            signature[name] = f"*{dtype}"
        elif name == "scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    return signature


def _bias(bias: tuple[Tensor, Tensor] | None, queries: Tensor) -> tuple[Tensor, Tensor]:
    """The bias table (float32, contiguous rows) and rows, or placeholders without a bias."""
    if bias is None:
        empty = torch.zeros(1, 1, dtype=torch.float32, device=queries.device)
        return empty, torch.zeros(1, dtype=torch.long, device=queries.device)
    table, rows = bias
    return table.to(torch.float32).contiguous(), rows.contiguous()


@torch.no_grad()
def _teacher(
    teacher_features: Tensor,
    teacher_weight: Tensor,
    centring: TeacherCentring,
    values: Tensor,
    teacher_temp: float,
    chunk_size: int,
    row_grads: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`~patchdino.losses.factored.teacher_pass` in two kernels (``chunk_size`` unused)."""
    bias = centring.offsets(teacher_features, teacher_weight)
    scale = 1.0 / teacher_temp
    lse, mu = softmax_rows(teacher_features, teacher_weight, values, scale, bias)
    if row_grads is None:
        return mu, None
    return mu, softmax_columns(teacher_features, teacher_weight, lse, row_grads, scale, bias)


@torch.no_grad()
def _student(
    features: Tensor, weight: Tensor, mass: Tensor, student_temp: float, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`~patchdino.losses.factored.student_pass` in two kernels (``chunk_size`` unused)."""
    scale = 1.0 / student_temp
    lse, nu = softmax_rows(features, weight, weight, scale)
    m = mass.to(torch.float32)[:, None]  # (Ns, 1)
    grad = softmax_columns(features, weight, lse, features.to(torch.float32) * m, scale)
    return lse, nu.mul_(m), grad


TRITON_PASSES = Passes(_teacher, _student)
"""The passes as Triton kernels (``loss.kernel=triton``)."""
