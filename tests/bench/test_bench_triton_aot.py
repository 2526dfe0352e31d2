"""The loss's Triton kernels compile for Ampere (sm_80) and Hopper (sm_90) on this CPU machine.

Every kernel x architecture x dtype x bottleneck width x bias table, at the launch's own
blocks and warps, compiled by Triton for the target and reported by its ``ptxas``: no spills,
shared memory within the block limit, Hopper's warpgroup MMA for bf16 on sm_90. The compile
runs in a fresh process without ``TRITON_INTERPRET`` (this suite's interpreter kernels cannot
be compiled).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="Triton is not installed")

from patchdino.bench.triton_aot import ARCHS, DIMS, DTYPES, RESERVED_SMEM, AotCase, blocks_per_sm
from patchdino.losses.triton_distill import Tile, tile_space


def _tile(case: AotCase) -> Tile:
    return Tile(case.block_m, case.block_k, case.warps, case.stages)


@pytest.fixture(scope="module")
def cases() -> list[AotCase]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "patchdino.bench.triton_aot", "--json", "--space"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [AotCase(**json.loads(line)) for line in done.stdout.splitlines()]


def test_every_kernel_compiles_for_both_architectures(cases: list[AotCase]) -> None:
    defaults = [c for c in cases if _tile(c) == tile_space(c.dim)[0]]
    keys = {(c.kernel, c.arch, c.dtype, c.dim, c.bias) for c in defaults}
    want = {
        (k, a, t, d, b)
        for k in ("row", "column")
        for a in ARCHS
        for t in DTYPES
        for d in DIMS
        for b in (True, False)
    }
    assert keys == want


def test_no_spills_and_shared_memory_within_the_block_limit(cases: list[AotCase]) -> None:
    for case in cases:
        assert case.spill_bytes == 0, case
        assert case.shared + RESERVED_SMEM <= ARCHS[case.arch]["smem_per_block"], case
        assert case.blocks_per_sm >= 1 and case.registers <= 255, case


def test_tensor_cores_are_used(cases: list[AotCase]) -> None:
    for case in cases:
        assert case.wgmma or case.mma, case  # tensor cores everywhere
        if case.arch == 90 and case.dtype == "bf16" and _tile(case) == tile_space(case.dim)[0]:
            assert case.wgmma, case  # the default tiles: Hopper's warpgroup MMA
        if case.arch == 80:
            assert case.mma and not case.wgmma, case  # Ampere's mma.sync


def test_blocks_per_sm_follows_the_occupancy_rules() -> None:
    # 218 registers x 8 warps: 7,168 registers a warp (rounded to 256), 9 warps fit: 1 block.
    assert blocks_per_sm(90, 218, 64 * 1024, 8) == 1
    # 152 registers: 4,864 a warp, 13 warps: 3 blocks of 4; 8 KiB shared each is no limit.
    assert blocks_per_sm(90, 152, 8 * 1024, 4) == 3
    # shared memory decides: 100 KiB blocks, 2 fit in 228 KiB but 1 in sm_80's 164 KiB.
    assert blocks_per_sm(90, 32, 100 * 1024, 4) == 2
    assert blocks_per_sm(80, 32, 100 * 1024, 4) == 1
    # threads decide: 32 registers, no shared memory, 16 warps: 2,048 threads / 512 = 4.
    assert blocks_per_sm(80, 32, 0, 16) == 4


def test_every_tile_of_the_space_compiles_and_one_holds_two_blocks(cases: list[AotCase]) -> None:
    for kernel in ("row", "column"):
        for arch in ARCHS:
            for dim in DIMS:
                found = {
                    Tile(c.block_m, c.block_k, c.warps, c.stages): c.blocks_per_sm
                    for c in cases
                    if (c.kernel, c.arch, c.dim, c.dtype, c.bias)
                    == (kernel, arch, dim, "bf16", True)
                }
                assert set(found) == set(tile_space(dim)), (kernel, arch, dim)
                assert max(found.values()) >= 2, (kernel, arch, dim, found)
