"""The loss's Triton kernels compiled ahead of time for Ampere and Hopper, without a GPU.

Triton compiles for a named target (``GPUTarget("cuda", 80 | 90, 32)``) on any machine; its
bundled ``ptxas`` then reports what the real compiler made of each kernel. For every kernel of
:mod:`patchdino.losses.triton_distill`, each dtype and bottleneck width ``d`` it runs with and
with and without the bias table, at the blocks and warps its launch code picks
(the first tile of :func:`~patchdino.losses.triton_distill.tile_space`; with ``--space``
every tile the tuner may choose), :func:`compile_case` gives the
registers per thread, the bytes spilled to local memory, the shared memory per block, whether
the matrix products use Hopper's ``wgmma`` or Ampere's ``mma.sync``, and how many blocks fit
on one SM. Usage (a markdown table, or ``--json``)::

    python -m patchdino.bench.triton_aot

Run it with ``TRITON_INTERPRET`` unset: the interpreter's kernels cannot be compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from patchdino.losses.triton_distill import Tile

ARCHS: dict[int, dict[str, int]] = {
    80: {"smem_per_block": 166_912, "smem_per_sm": 167_936, "regs_per_sm": 65_536},
    90: {"smem_per_block": 232_448, "smem_per_sm": 233_472, "regs_per_sm": 65_536},
}
"""Per-architecture limits (CUDA occupancy tables): the largest opt-in shared memory of one
block, the shared memory and 32-bit registers of one SM. Both allow 2,048 threads, 64 warps
and 32 blocks per SM, and reserve 1 KiB of shared memory per block."""
MAX_THREADS, MAX_WARPS, MAX_BLOCKS, RESERVED_SMEM = 2048, 64, 32, 1024
DIMS = (32, 64, 256)
"""Bottleneck widths the kernels run with: tests and small heads, the CPU recipe, the paper."""
DTYPES = ("bf16", "fp16")
"""Input dtypes on a GPU (autocast); float32 inputs run only in the tests' interpreter."""


@dataclass(frozen=True)
class AotCase:
    """One compiled kernel and what ``ptxas`` made of it.

    Attributes:
        kernel: ``"row"`` or ``"column"``.
        arch: compute capability x 10 (80, 90).
        dtype: input dtype.
        dim: bottleneck width ``d``.
        bias: compiled with the bias table (the teacher's pass; the student's has none).
        block_m, block_k, block_d, warps, stages: the launch configuration.
        registers: 32-bit registers per thread.
        spill_bytes: bytes of local-memory spill stores plus loads.
        shared: bytes of shared memory per block.
        wgmma: the matrix products use Hopper's warpgroup MMA.
        mma: they use Ampere's ``mma.sync``.
        blocks_per_sm: blocks one SM holds at once (registers, shared memory and threads).
    """

    kernel: str
    arch: int
    dtype: str
    dim: int
    bias: bool
    block_m: int
    block_k: int
    block_d: int
    warps: int
    stages: int
    registers: int
    spill_bytes: int
    shared: int
    wgmma: bool
    mma: bool
    blocks_per_sm: int


def blocks_per_sm(arch: int, registers: int, shared: int, warps: int) -> int:
    """Blocks of ``warps`` warps that fit on one SM of ``arch`` at once.

    Registers are allocated per warp in units of 256, shared memory per block plus the
    reserved 1 KiB.
    """
    limits = ARCHS[arch]
    warp_registers = math.ceil(registers * 32 / 256) * 256
    by_registers = min(limits["regs_per_sm"] // warp_registers, MAX_WARPS) // warps
    by_shared = limits["smem_per_sm"] // (shared + RESERVED_SMEM)
    by_threads = MAX_THREADS // (warps * 32)
    return max(0, min(by_registers, by_shared, by_threads, MAX_BLOCKS))


def compile_case(
    kernel: str, arch: int, dtype: str, dim: int, bias: bool, tile: Tile | None = None
) -> AotCase:
    """Compile one kernel for ``arch`` at ``tile`` (default: the launch's default tile);
    what ``ptxas`` reports.

    Raises:
        RuntimeError: under ``TRITON_INTERPRET`` (nothing to compile), or ``ptxas`` failed.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    from patchdino.losses import triton_distill

    function = triton_distill.KERNELS[kernel]
    if not hasattr(function, "arg_names") or os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("Triton kernels cannot be compiled under TRITON_INTERPRET=1")
    tile = tile or triton_distill.tile_space(dim)[0]
    block_m, block_k, warps = tile.block_m, tile.block_k, tile.warps
    block_d = triton_distill.block_width(dim)
    constants = {"has_bias": bias, "block_m": block_m, "block_k": block_k, "block_d": block_d}
    source = ASTSource(
        fn=function,
        signature=triton_distill.kernel_signature(function, dtype),
        constexprs=constants,
    )
    options = {"num_warps": warps, "num_stages": tile.stages}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = compiled.asm["ptx"]
    registers, spills = _ptxas_report(get_ptxas(arch).path, ptx, arch)
    shared = int(compiled.metadata.shared)
    return AotCase(
        kernel,
        arch,
        dtype,
        dim,
        bias,
        block_m,
        block_k,
        block_d,
        warps,
        tile.stages,
        registers,
        spills,
        shared,
        "wgmma" in ptx,
        "mma.sync" in ptx,
        blocks_per_sm(arch, registers, shared, warps),
    )


def _ptxas_report(ptxas: str, ptx: str, arch: int) -> tuple[int, int]:
    """Registers per thread and spilled bytes (stores + loads) of the one kernel in ``ptx``."""
    name = "sm_90a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        done = subprocess.run(
            [ptxas, "-v", f"--gpu-name={name}", path, "-o", os.devnull],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed for {name}: {done.stderr.strip()[-500:]}")
    registers = re.search(r"Used (\d+) registers", done.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", done.stderr)
    if registers is None or spills is None:
        raise RuntimeError(f"unexpected ptxas report: {done.stderr.strip()[-500:]}")
    return int(registers.group(1)), int(spills.group(1)) + int(spills.group(2))


CaseKey = tuple[str, int, str, int, bool, "Tile | None"]


def all_cases(
    archs: Sequence[int] = tuple(ARCHS),
    dims: Sequence[int] = DIMS,
    jobs: int = 1,
    space: bool = False,
) -> list[AotCase]:
    """Every kernel x arch x dtype x ``d`` x bias at the default tile, compiled (about a
    second each, cold), in ``jobs`` processes, in that order; with ``space`` then every other
    tile of :func:`~patchdino.losses.triton_distill.tile_space` for bf16 with the bias table
    (the largest case: fp16 compiles alike, the bias only adds)."""
    from patchdino.losses.triton_distill import tile_space

    keys: list[CaseKey] = [
        (kernel, arch, dtype, dim, bias, None)
        for kernel in ("row", "column")
        for arch in archs
        for dtype in DTYPES
        for dim in dims
        for bias in (True, False)
    ]
    if space:
        keys += [
            (kernel, arch, "bf16", dim, True, tile)
            for kernel in ("row", "column")
            for arch in archs
            for dim in dims
            for tile in tile_space(dim)[1:]
        ]
    if jobs <= 1:
        return [compile_case(*key) for key in keys]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_compile_key, keys))


def _compile_key(key: CaseKey) -> AotCase:
    return compile_case(*key)


def markdown(cases: Sequence[AotCase]) -> str:
    """The table of docs/performance.md."""
    lines = [
        "| kernel | sm | dtype | d | bias | blocks (m, k, d), warps, stages | registers "
        "| spills (B) | shared (KiB) | MMA | blocks / SM |",
        "| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for c in cases:
        mma = "wgmma" if c.wgmma else ("mma.sync" if c.mma else "none")
        lines.append(
            f"| {c.kernel} | {c.arch} | {c.dtype} | {c.dim} | {'yes' if c.bias else 'no'} "
            f"| ({c.block_m}, {c.block_k}, {c.block_d}), {c.warps}, {c.stages} | {c.registers} "
            f"| {c.spill_bytes} | {c.shared / 1024:.1f} | {mma} | {c.blocks_per_sm} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--archs", default="80,90", help="compute capabilities x 10")
    parser.add_argument("--dims", default=",".join(map(str, DIMS)), help="bottleneck widths")
    parser.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compiling processes"
    )
    parser.add_argument("--space", action="store_true", help="also every tile the tuner tries")
    args = parser.parse_args(argv)
    archs = [int(a) for a in args.archs.split(",")]
    cases = all_cases(archs, [int(d) for d in args.dims.split(",")], args.jobs, args.space)
    if args.json:
        for case in cases:
            print(json.dumps(dataclasses.asdict(case)))
    else:
        print(markdown(cases), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
