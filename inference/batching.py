"""Client-side micro-batching: concurrent callers share one upstream call.

Callers ``submit`` items (texts to embed, query/passage pairs to score) and await
their own results. A collector task forms batches the way Triton's dynamic
batcher does:

* a batch of ``max_batch_size`` items is sent at once;
* otherwise, once a preferred batch size can be formed, the largest such size is
  sent at once;
* otherwise, when no batch of this batcher is in flight (the upstream is idle),
  what is there is sent at once: waiting would only add latency;
* otherwise the collector waits until the in-flight batches are done, at most
  ``max_wait_s`` after the oldest pending item arrived, then sends what is there.

So a lone caller pays no batching delay, and under load the items that arrive
while earlier batches are being served go out together.

Batches are sent concurrently (the endpoint's limiter bounds them); a failed call
fails every item of its batch with the same typed error. A caller that is
cancelled leaves its items behind: they are skipped if not yet sent. The collector
task exits when the queue is empty and is restarted by the next submit, so no task
outlives the work.

Tracing: each item remembers its caller's current span; a batch is one ``inference.batch``
span linked to every caller it serves (and parented to one of them, so it also shows in
that request's trace); the upstream call is its child (monitoring.tracing.start_batch_span).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from monitoring import metrics, tracing

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@dataclass(slots=True)
class _Pending(Generic[I, O]):
    item: I
    future: asyncio.Future[O]
    enqueued_at: float = field(default=0.0)
    caller: Any = None  # the caller's current span (tracing), for the batch's links


class MicroBatcher(Generic[I, O]):
    def __init__(
        self,
        run_batch: Callable[[list[I]], Awaitable[Sequence[O]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        preferred_sizes: Sequence[int] = (),
        name: str = "",
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.preferred_sizes = sorted({p for p in preferred_sizes if 0 < p <= self.max_batch_size}, reverse=True)
        self.name = name
        self._pending: collections.deque[_Pending[I, O]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches_sent = 0

    async def submit(self, items: Sequence[I]) -> list[O]:
        """Results for ``items``, in order (each item may travel in a different batch)."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        now = loop.time()
        caller = tracing.current_span()
        entries = [_Pending(item, loop.create_future(), now, caller) for item in items]
        self._pending.extend(entries)
        self._wakeup.set()
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect(), name=f"microbatch-{self.name}")
        try:
            return list(await asyncio.gather(*(e.future for e in entries)))
        except BaseException:
            for entry in entries:
                entry.future.cancel()  # not sent yet: skipped; already sent: result dropped
            raise

    def _live(self) -> int:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()
        return sum(1 for e in self._pending if not e.future.done())

    def _ready_size(self, live: int) -> int:
        """How many items to send now (0: keep waiting)."""
        if live >= self.max_batch_size:
            return self.max_batch_size
        for size in self.preferred_sizes:
            if live >= size:
                return size
        return 0

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            live = self._live()
            if live == 0:
                return
            size = self._ready_size(live)
            if size == 0 and not self._in_flight:
                # Nothing in flight: the upstream is idle, waiting would only add latency.
                # Under load, items pile up while batches are in flight and go out together.
                size = min(live, self.max_batch_size)
            if size == 0:
                remaining = self._pending[0].enqueued_at + self.max_wait_s - loop.time()
                if remaining > 0:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(remaining):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                    continue
                size = min(live, self.max_batch_size)
            batch: list[_Pending[I, O]] = []
            while self._pending and len(batch) < size:
                entry = self._pending.popleft()
                if not entry.future.done():
                    batch.append(entry)
            if batch:
                task = asyncio.create_task(self._send(batch, loop.time()))
                self._in_flight.add(task)
                task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wakeup.set()  # the upstream may be idle now: waiting items can go at once

    async def _send(self, batch: list[_Pending[I, O]], sent_at: float) -> None:
        self.batches_sent += 1
        metrics.EMBEDDING_BATCH_SIZE.observe(len(batch))
        for entry in batch:
            metrics.EMBEDDING_BATCH_WAIT.labels(self.name).observe(sent_at - entry.enqueued_at)
        span = (
            tracing.start_batch_span(
                "inference.batch",
                (e.caller for e in batch),
                **{"batch.name": self.name, "batch.size": len(batch), "batch.wait_ms": _wait_ms(batch, sent_at)},
            )
            if tracing.enabled()
            else None
        )
        try:
            with tracing.use_span(span):
                results = await self._run_batch([e.item for e in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} got {len(results)} results")
        except BaseException as exc:
            tracing.end_span(span, exc)
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        tracing.end_span(span)
        for entry, result in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)


def _wait_ms(batch: list[_Pending[Any, Any]], sent_at: float) -> float:
    """How long the oldest item of the batch waited for it to form."""
    return round((sent_at - min(e.enqueued_at for e in batch)) * 1000, 2)


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]
