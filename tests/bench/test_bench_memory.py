"""Peak memory per case on the CPU counts what the case allocates, even after earlier cases."""

from __future__ import annotations

import pytest
import torch

from patchdino.bench import BenchSettings, make_cases, run_bench
from patchdino.bench.memory import RSS_METHOD, PeakMemory

MIB = 2**20


def _case(memory: PeakMemory, mib: int, kept: list[torch.Tensor]) -> int:
    """Allocate ``mib`` MiB in 4 MiB tensors with small survivors in between, then free them."""
    memory.start()
    if memory.method != RSS_METHOD:
        pytest.skip("needs Linux /proc/self/clear_refs and VmHWM")
    blocks = []
    for _ in range(mib // 4):
        blocks.append(torch.ones(MIB))  # 4 MiB, touched: resident
        kept.append(torch.ones(64))  # pins the heap, so freed blocks stay mapped
    del blocks
    return memory.peak_bytes()


def test_each_case_sees_its_own_peak() -> None:
    memory = PeakMemory(torch.device("cpu"))
    kept: list[torch.Tensor] = []
    first = _case(memory, 160, kept)
    second = _case(memory, 160, kept)  # the first case's freed memory must not hide this one
    small = _case(memory, 8, kept)
    assert first >= 150 * MIB and second >= 150 * MIB
    assert small < 100 * MIB


def test_a_repeated_case_reports_the_same_peak_as_the_first() -> None:
    """Without handing freed memory back, the repeat would reuse it and report far less."""
    tiny = [
        "model.arch=vit_nano",
        "model.patch_size=8",
        "views.global_size=64",
        "views.local_size=32",
        "views.num_local=4",
        "model.out_dim=8192",
        "model.hidden_dim=512",
        "optim.batch_size=4",
    ]
    cases = make_cases(["patch"], tiny, [("again", ["loss.terms.patch.weight=1"])])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_bench(cases, BenchSettings(torch.device("cpu"), steps=1, warmup=0))
    finally:
        torch.set_num_threads(threads)
    if result.memory_method != RSS_METHOD:
        pytest.skip("needs Linux /proc/self/clear_refs and VmHWM")
    first, again = (r.peak_memory_bytes or 0 for r in result.rows)
    assert first > 50 * MIB
    assert again >= 0.75 * first
