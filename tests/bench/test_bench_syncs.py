"""Host syncs of a step: each kind of call that waits for the device is counted, others not."""

from __future__ import annotations

import pytest
import torch

from patchdino.bench import BenchSettings, make_cases, run_bench
from patchdino.bench.syncs import count_host_syncs
from tiny_config import TINY_BENCH_OVERRIDES

CPU = torch.device("cpu")


def test_each_kind_of_sync_is_counted_once_per_call() -> None:
    x = torch.arange(6.0)
    repeats = torch.tensor([1, 2, 0, 1, 1, 1])

    def step() -> None:
        x.sum().item()  # a scalar read
        bool(x[0] > 0)  # another
        x[x > 2]  # boolean indexing
        x.nonzero()
        torch.unique(x)
        x.repeat_interleave(repeats)  # output size unknown
        x.repeat_interleave(repeats, output_size=6)  # known: no sync
        x.tolist()
        x.cpu()

    counts = count_host_syncs(step, CPU)
    assert counts == {
        "aten::_local_scalar_dense": 2,
        "aten::index": 1,
        "aten::nonzero": 1,
        "aten::_unique2": 1,
        "aten::repeat_interleave": 1,
        "Tensor.tolist": 1,
        "Tensor.cpu": 1,
    }


def test_work_that_stays_on_the_device_counts_nothing() -> None:
    x = torch.randn(8, 4, requires_grad=True)
    index = torch.tensor([0, 3, 3])

    def step() -> None:
        y = (x @ x.T).softmax(dim=1)[index]  # integer indexing: shape known
        torch.where(y > 0.5, y, 0.0).sum().backward()

    assert count_host_syncs(step, CPU) == {}


def test_the_optimisers_host_side_step_counters_are_not_counted() -> None:
    """Non-fused AdamW reads each parameter's ``step`` with ``.item()``; on CUDA that
    counter lives on the host, so the read waits for nothing."""
    weights = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    optimizer = torch.optim.AdamW(weights, foreach=True)
    for w in weights:
        w.grad = torch.ones(3)
    optimizer.step()  # creates the state

    def step() -> None:
        optimizer.step()
        weights[0].sum().item()  # the caller's own read still counts

    assert count_host_syncs(step, CPU) == {"aten::_local_scalar_dense": 1}


def test_the_methods_are_restored_after_counting() -> None:
    methods = (torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy)
    with pytest.raises(ZeroDivisionError):
        count_host_syncs(lambda: 1 / 0, CPU)
    assert (torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy) == methods


def test_the_bench_model_step_syncs_once_and_the_report_says_so() -> None:
    """The model step's one sync is the gradient norm (``clip_gradients``); the loss, its
    centres and the EMA update read nothing back."""
    cases = make_cases(["cls", "patch", "pipeline"], TINY_BENCH_OVERRIDES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_bench(cases, BenchSettings(CPU, steps=1, warmup=0, canvas=24))
    finally:
        torch.set_num_threads(threads)
    rows = {r.name: r for r in result.rows}
    assert rows["cls"].host_syncs == {"aten::_local_scalar_dense": 1}
    assert rows["patch"].host_syncs == {"aten::_local_scalar_dense": 1}
    assert (rows["pipeline"].host_sync_count or 0) > 0  # matching's data-dependent shapes
    assert result.to_dict()["rows"][1]["host_syncs"] == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_pytorchs_detector_counts_the_syncs() -> None:
    device = torch.device("cuda")
    x = torch.randn(16, device=device)

    def step() -> None:
        (x * 2).sum()  # no sync
        x.sum().item()
        x[x > 0]
        x.tolist()

    assert count_host_syncs(step, device)["cuda sync"] >= 3  # one or more per call
    assert count_host_syncs(lambda: x * 2, device) == {}
