"""Per-endpoint concurrency limit with a bounded FIFO queue.

At most ``max_concurrent`` requests run against an endpoint; up to ``max_queue``
more wait for a slot (FIFO) for at most ``queue_timeout_s``. Beyond that the
request is refused at once with ``QueueFull``: a busy model answers "busy" in
milliseconds instead of piling up sockets and timing out later.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from inference.errors import QueueFull


class ConcurrencyLimiter:
    def __init__(
        self,
        *,
        max_concurrent: int,
        max_queue: int,
        queue_timeout_s: float,
        name: str = "",
        on_change: Callable[[int, int], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.max_concurrent = max(1, max_concurrent)
        self.max_queue = max(0, max_queue)
        self.queue_timeout_s = queue_timeout_s
        self.name = name
        self._active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._on_change = on_change
        self._on_wait = on_wait

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def outstanding(self) -> int:
        """Requests running or queued: the load figure routing balances on."""
        return self._active + len(self._waiters)

    def has_room(self) -> bool:
        """Whether ``acquire`` would run or queue (not refuse) right now."""
        return self._active < self.max_concurrent or len(self._waiters) < self.max_queue

    async def acquire(self) -> None:
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            self._changed()
            if self._on_wait:
                self._on_wait(0.0)
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(
                f"endpoint {self.name}: {self._active} running, queue of {self.max_queue} full", endpoint=self.name
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._changed()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except TimeoutError:
            # The slot may have been handed over just as the deadline fired: then take it.
            if not (waiter.done() and not waiter.cancelled()):
                raise QueueFull(
                    f"endpoint {self.name}: no slot within {self.queue_timeout_s:g}s", endpoint=self.name
                ) from None
        except BaseException:
            # Cancelled: if a slot was handed to us in the meantime, pass it on.
            if waiter.done() and not waiter.cancelled():
                self._release_slot()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self._changed()
        if self._on_wait:
            self._on_wait(time.perf_counter() - started)

    def release(self) -> None:
        self._release_slot()

    def _release_slot(self) -> None:
        # Hand the slot straight to the oldest live waiter (FIFO, no thundering herd).
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._changed()
                return
        self._active -= 1
        self._changed()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def _changed(self) -> None:
        if self._on_change:
            self._on_change(self._active, len(self._waiters))
