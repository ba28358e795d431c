"""Dynamic micro-batching: concurrent requests to one model become one batched model call.

A model call on CPU costs far more per call than per input (Python, tokenizer and kernel launch
overheads; small matrices use the cores badly), so merging requests raises throughput under load.
Each model gets one queue and one worker thread: the worker takes the first waiting request and
everything queued behind it (up to `max_batch` inputs), runs `fn(inputs)` once off the event loop,
and hands each request its slice of the outputs. While a call runs, new requests queue up, so under
load batches fill without waiting. Waiting for company (up to `max_wait_ms`) happens only when others
are arriving: when the previous call served more than one request. A lone client never waits, so
batching costs it nothing; concurrent clients whose requests come back staggered are still gathered.
A request is never split; one larger than `max_batch` runs alone. `max_batch=1` turns batching off.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class BatchObserver(Protocol):
    def observe_batch(self, model: str, items: int, requests: int, seconds: float, waits: Sequence[float],
                      ok: bool) -> None: ...


@dataclass
class _Pending(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]
    enqueued: float = field(default_factory=time.perf_counter)


class BatcherClosedError(RuntimeError):
    pass


class MicroBatcher(Generic[In, Out]):
    """Gathers `submit()`ed inputs from concurrent callers into calls of `fn(list) -> list` (same length)."""

    def __init__(self, name: str, fn: Callable[[list[In]], list[Out]], *, max_batch: int, max_wait_ms: float,
                 observer: BatchObserver | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.name = name
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.observer = observer
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._held: deque[_Pending[In, Out]] = deque()  # took it from the queue, but it did not fit
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._last_requests = 0  # requests the previous call served: > 1 means concurrent callers are around

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        pending = list(self._held)
        self._held.clear()
        while self._queue and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for p in pending:
            if not p.future.done():
                p.future.set_exception(BatcherClosedError(f"{self.name} batcher stopped"))
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def pending(self) -> int:
        """Requests submitted and not yet answered (queued, or in a batch that is running)."""
        return self._pending

    async def run_in_worker(self, fn: Callable[[], Out]) -> Out:
        """Run `fn` on this model's thread (e.g. loading the model), serialised with its batches."""
        if self._executor is None:
            raise BatcherClosedError(f"{self.name} batcher is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """Outputs for `items`, in order, computed together with whatever else is waiting."""
        if not items:
            return []
        if self._queue is None or self._task is None:
            raise BatcherClosedError(f"{self.name} batcher is not running")
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        self._pending += 1
        try:
            await self._queue.put(_Pending(list(items), future))
            return await future
        finally:
            self._pending -= 1

    async def _next(self, timeout: float | None) -> _Pending[In, Out] | None:
        if self._held:
            return self._held.popleft()
        assert self._queue is not None
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            if first is None or first.future.done():  # None cannot happen without a timeout; done = caller gone
                continue
            batch, size = [first], len(first.items)
            # alone (the last call served one request): take what is queued, wait for nobody
            deadline = loop.time() + (self.max_wait if self._last_requests > 1 else 0.0)
            while size < self.max_batch:
                nxt = await self._next(deadline - loop.time())
                if nxt is None:
                    break
                if nxt.future.done():
                    continue
                if size + len(nxt.items) > self.max_batch:
                    self._held.appendleft(nxt)  # first in line for the next batch
                    break
                batch.append(nxt)
                size += len(nxt.items)
            await self._run(batch)

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        items = [x for p in batch for x in p.items]
        self._last_requests = len(batch)
        started = time.perf_counter()
        waits = [started - p.enqueued for p in batch]
        assert self._executor is not None
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, items)
            if len(outputs) != len(items):
                raise RuntimeError(f"{self.name}: model returned {len(outputs)} outputs for {len(items)} inputs")
        except Exception as err:  # every caller in the batch learns why
            self._observe(len(items), len(batch), started, waits, ok=False)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        self._observe(len(items), len(batch), started, waits, ok=True)
        offset = 0
        for p in batch:
            part = outputs[offset: offset + len(p.items)]
            offset += len(p.items)
            if not p.future.done():
                p.future.set_result(part)

    def _observe(self, items: int, requests: int, started: float, waits: list[float], ok: bool) -> None:
        if self.observer is not None:
            self.observer.observe_batch(self.name, items, requests, time.perf_counter() - started, waits, ok)
