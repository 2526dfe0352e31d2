"""Inputs made one step ahead: the same items, in order, errors where the serial loop has them."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from patchdino.train.ahead import Ahead, tensors_of


def test_items_come_in_order_made_on_another_thread_one_ahead() -> None:
    made: list[tuple[int, str]] = []

    def produce(index: int) -> int:
        made.append((index, threading.current_thread().name))
        return index * 10

    with Ahead(produce, 3, torch.device("cpu")) as ahead:
        assert [ahead.next() for _ in range(4)] == [30, 40, 50, 60]
    assert [i for i, _ in made] == [3, 4, 5, 6, 7]  # 7: made ahead, never asked for
    assert all(name.startswith("patchdino-ahead") for _, name in made)


def test_disabled_makes_the_same_items_on_the_callers_thread() -> None:
    names: list[str] = []

    def produce(index: int) -> int:
        names.append(threading.current_thread().name)
        return index + 1

    ahead = Ahead(produce, 0, torch.device("cpu"), enabled=False)
    assert [ahead.next() for _ in range(3)] == [1, 2, 3]
    ahead.close()
    assert names == [threading.current_thread().name] * 3


def test_an_error_is_raised_for_its_item_and_nothing_runs_after_it() -> None:
    made: list[int] = []

    def produce(index: int) -> int:
        made.append(index)
        if index == 1:
            raise ValueError("bad image 1")
        return index

    ahead = Ahead(produce, 0, torch.device("cpu"))
    assert ahead.next() == 0
    with pytest.raises(ValueError, match="bad image 1"):
        ahead.next()
    ahead.close()
    assert made == [0, 1]  # as in the serial loop, nothing after the failed item
    ahead.close()  # twice is fine


def test_close_waits_for_the_item_in_flight() -> None:
    release, finished = threading.Event(), threading.Event()

    def produce(index: int) -> int:
        if index == 1:
            release.wait(5)
            finished.set()
        return index

    ahead = Ahead(produce, 0, torch.device("cpu"))
    assert ahead.next() == 0  # item 1 is now being made
    threading.Timer(0.2, release.set).start()
    ahead.close()
    assert finished.is_set()


def test_an_error_of_an_item_nobody_asks_for_is_dropped() -> None:
    def produce(index: int) -> int:
        if index == 1:
            raise RuntimeError("never asked for")
        return index

    ahead = Ahead(produce, 0, torch.device("cpu"))
    assert ahead.next() == 0
    ahead.close()


@dataclass
class _Item:
    views: list[torch.Tensor]
    plan: dict[str, tuple[torch.Tensor, int]]
    name: str


def test_tensors_of_walks_dataclasses_lists_tuples_and_dicts() -> None:
    a, b, c = torch.zeros(1), torch.ones(2), torch.ones(3)
    found = list(tensors_of(_Item([a, b], {"x": (c, 4)}, "n")))
    assert [t.numel() for t in found] == [1, 2, 3]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_items_made_on_a_side_stream_are_ready_for_the_consumer() -> None:
    device = torch.device("cuda")

    def produce(index: int) -> torch.Tensor:
        x = torch.full((1024, 1024), float(index), device=device)
        for _ in range(20):  # long enough to still run when the consumer asks
            x = x @ torch.eye(1024, device=device)
        return x

    with Ahead(produce, 0, device) as ahead:
        for index in range(4):
            item = ahead.next()
            assert float(item.mean()) == pytest.approx(index)


def _nothing() -> None:
    pass


def test_a_process_forked_from_the_thread_exits_cleanly() -> None:
    """Loader workers are forked from the producer thread when it starts an epoch."""
    import multiprocessing

    def produce(index: int) -> int | None:
        process = multiprocessing.get_context("fork").Process(target=_nothing)
        process.start()
        process.join(10)
        return process.exitcode

    with Ahead(produce, 0, torch.device("cpu")) as ahead:
        assert ahead.next() == 0
