"""One per-process cache for configuration read on the hot path (settings rows, policies, keys).

The request path must not query the database for what an operator changes a few times
a day, so each process keeps a copy for a few seconds. Every such copy goes through
``LocalCache``: a bounded LRU (cachetools) whose entries are fresh for ``ttl()`` seconds.

Expired entries are not dropped, only ignored, so ``get_or_load`` can serve the
last-known-good value when reloading fails (the database is restarting): the request is
answered with slightly old configuration instead of a 500. That is counted in
``config_stale_served_total{cache}`` and logged once per interval, and the stale entry
is re-armed for ``STALE_RETRY_S`` so a dead database is not asked again on every request.

``aget_or_load`` (the async request path) also bounds the wait: concurrent callers share one
load, and when a last-known-good value exists nobody waits more than ``LOAD_WAIT_S`` for a
reload (a database that hangs instead of refusing): the old value is served meanwhile and
the load finishes in the background. Only a process's very first load has no such value.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

from monitoring.metrics import LOCAL_CACHE_STALE_SERVED

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# After a failed reload, serve the stale value this long before trying again.
STALE_RETRY_S = 5.0
# At most one warning per cache per this many seconds while reloads keep failing.
WARN_EVERY_S = 30.0
# With a last-known-good value at hand, the longest a request waits for a reload.
LOAD_WAIT_S = 1.0


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    fresh_until: float


class LocalCache(Generic[K, V]):
    """Bounded (LRU) per-process cache with a TTL and a last-known-good fallback.

    ``ttl`` is read at each write, so a setting changed at run time (tests) applies to
    the next entry. Thread-safe: the ORM loads run in worker threads.
    """

    def __init__(self, name: str, *, ttl: Callable[[], float], maxsize: int = 10_000) -> None:
        self.name = name
        self._ttl = ttl
        self._entries: LRUCache[K, _Entry[V]] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self._warned_at = 0.0
        self._failures = 0
        self._loads: dict[K, asyncio.Task[V]] = {}  # reloads in flight (one per key)

    def get(self, key: K) -> V:
        """The fresh value, or ``MISSING``."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.fresh_until <= time.monotonic():
            return MISSING
        return entry.value

    def get_stale(self, key: K) -> V:
        """The value whatever its age, or ``MISSING``."""
        with self._lock:
            entry = self._entries.get(key)
        return MISSING if entry is None else entry.value

    def set(self, key: K, value: V, *, ttl: float | None = None) -> V:
        seconds = self._ttl() if ttl is None else ttl
        with self._lock:
            self._entries[key] = _Entry(value, time.monotonic() + seconds)
        return value

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_load(self, key: K, load: Callable[[], V], *, fallback_on: tuple[type[BaseException], ...] = ()) -> V:
        value = self.get(key)
        if value is not MISSING:
            return value
        try:
            return self.set(key, load())
        except fallback_on as exc:
            return self.fallback(key, exc)

    async def aget_or_load(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        fallback_on: tuple[type[BaseException], ...] = (),
        default: Any = MISSING,
    ) -> V:
        """The cached value, else ``load()``'s: reloads cut at LOAD_WAIT_S serve the last-known-good value.

        A first load (nothing to serve instead) is waited for. ``default``: what a failed first
        load (one of ``fallback_on``) serves until a load succeeds (e.g. an empty policy table);
        without it the failure is raised.
        """
        value = self.get(key)
        if value is not MISSING:
            return value
        loop = asyncio.get_running_loop()
        task = self._loads.get(key)
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._loads[key] = loop.create_task(self._load(key, load))
            task.add_done_callback(lambda t: self._loaded(key, t, fallback_on))
        if self.get_stale(key) is MISSING:
            try:
                return await asyncio.shield(task)  # nothing to serve instead: wait for the first load
            except fallback_on:
                if default is MISSING:
                    raise
                return self.set(key, default, ttl=0)  # the next call tries again, serving this meanwhile
        try:
            return await asyncio.wait_for(asyncio.shield(task), LOAD_WAIT_S)
        except TimeoutError as exc:
            # The database hangs: answer with the last-known-good value; the load goes on.
            return self.fallback(key, exc)
        except fallback_on as exc:
            return self.fallback(key, exc)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        return self.set(key, await load())

    def _loaded(self, key: K, task: asyncio.Task[V], fallback_on: tuple[type[BaseException], ...]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]
        # Nobody may be waiting any more (they were served the old value): retrieve the
        # outcome here so a failure is counted and an error never goes unobserved.
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, fallback_on) and self.get_stale(key) is not MISSING:
                self.set(key, self.get_stale(key), ttl=STALE_RETRY_S)

    def fallback(self, key: K, exc: BaseException) -> V:
        """The last-known-good value after a failed reload (counted, logged once per interval); re-raises ``exc`` without one."""
        stale = self.get_stale(key)
        if stale is MISSING:
            raise exc
        self.set(key, stale, ttl=STALE_RETRY_S)
        LOCAL_CACHE_STALE_SERVED.labels(cache=self.name).inc()
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            log.warning(
                "%s: reload failed (%s); serving the last-known-good value (%d failed reloads since the last warning)",
                self.name,
                f"no answer within {LOAD_WAIT_S:g} s"
                if isinstance(exc, TimeoutError)
                else f"{type(exc).__name__}: {exc}",
                self._failures,
            )
            self._warned_at = now
            self._failures = 0
        return stale
