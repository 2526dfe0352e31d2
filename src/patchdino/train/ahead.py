"""Making each step's inputs one step ahead, beside the model step (``run.pipeline``).

A step's input pipeline (load a batch, cut the views, match patches, plan the pairs) does not
depend on the model, so it can run while the previous step's model runs. :class:`Ahead` runs
``produce(i)`` for ``i = 0, 1, 2, ...`` on one background thread, always one item ahead of
the consumer; on CUDA the producer works on a side stream of the same device, so its kernels
(and the host syncs that the pair plan's data-dependent shapes need) go beside the model's
instead of between them: the thread waits on its own stream while the model's kernels run.

Correctness rests on three things:

- each item depends only on its index (its views and plan draw from a generator seeded by
  the step), so what is made is the same whether made ahead or not, and a resumed run makes
  it again from the index;
- the consumer's stream waits for the producer's stream before it uses an item, and every
  CUDA tensor of the item is recorded on the consumer's stream, so the caching allocator does
  not hand its memory to the producer while the model still reads it;
- an error of ``produce`` (a loader worker's death, a bad image) is raised by :meth:`next`
  where the serial loop would have raised it, and :meth:`close` waits for the item in flight,
  so nothing runs behind the caller's back once it returns.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import torch

T = TypeVar("T")


def makes_ahead(setting: str, device: torch.device) -> bool:
    """Whether ``run.pipeline=setting`` makes inputs one step ahead on ``device``."""
    return setting == "ahead" or (setting == "auto" and device.type == "cuda")


def tensors_of(item: Any) -> Iterator[torch.Tensor]:
    """Every tensor reachable from ``item`` through dataclasses, tuples, lists and dicts."""
    if isinstance(item, torch.Tensor):
        yield item
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        for field in dataclasses.fields(item):
            yield from tensors_of(getattr(item, field.name))
    elif isinstance(item, (list, tuple)):
        for value in item:
            yield from tensors_of(value)
    elif isinstance(item, dict):
        for value in item.values():
            yield from tensors_of(value)


class Ahead(Generic[T]):
    """``produce(start), produce(start + 1), ...``, each made while the previous one is used.

    The thread is a plain :class:`threading.Thread`, not a ``concurrent.futures`` pool: a
    loader worker forked from a pool's thread would try to join that thread when it exits
    (the pool's exit hook) and end with exit code 1.

    Args:
        produce: makes item ``i``; called on one background thread, in order.
        start: the first index.
        device: where the items' tensors live; on CUDA the producer uses a side stream.
        enabled: False calls ``produce`` in :meth:`next` itself, on the caller's thread
            (the serial loop, with the same items).
    """

    def __init__(
        self, produce: Callable[[int], T], start: int, device: torch.device, enabled: bool = True
    ) -> None:
        self.produce = produce
        self.index = start
        self.device = device
        self.enabled = enabled
        self._stream = torch.cuda.Stream(device) if enabled and device.type == "cuda" else None
        self._requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[T | None, Any, BaseException | None]]
        self._results = queue.SimpleQueue()
        self._in_flight = False
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._serve, name="patchdino-ahead", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        """The background thread: make each requested item, until asked to stop (None)."""
        while (index := self._requests.get()) is not None:
            try:
                item, done = self._make(index)
                self._results.put((item, done, None))
            except BaseException as err:  # handed to the consumer, raised there
                self._results.put((None, None, err))

    def _make(self, index: int) -> tuple[T, Any]:
        """Item ``index`` and, on CUDA, the event its stream records after it."""
        if self._stream is None:
            return self.produce(index), None
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            item = self.produce(index)
            done = torch.cuda.Event()
            done.record(self._stream)
        return item, done

    def _request(self) -> None:
        self._requests.put(self.index)
        self.index += 1
        self._in_flight = True

    def next(self) -> T:
        """The next item; the one after it starts at once on the background thread.

        Raises:
            Whatever ``produce`` raised for this item (nothing is made after it).
        """
        if not self.enabled:
            item = self.produce(self.index)
            self.index += 1
            return item
        if not self._in_flight:
            self._request()
        made, done, error = self._results.get()
        self._in_flight = False
        if error is not None:
            raise error
        if done is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(done)
            for tensor in tensors_of(made):
                if tensor.is_cuda:
                    tensor.record_stream(stream)
        self._request()
        return made  # type: ignore[return-value]

    def close(self) -> None:
        """Wait for the item in flight (dropping it and any error of it) and stop the thread."""
        if self._in_flight:
            self._results.get()
            self._in_flight = False
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
