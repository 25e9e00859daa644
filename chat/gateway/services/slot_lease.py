"""Concurrency slots are leases: short-lived in Redis, renewed while their request runs.

A slot (``...:concurrency``, member -> expiry) is released by ``settle``. A process that
dies mid-answer (a replica killed, an OOM, a deploy without drain) never settles, and its
slots used to stay for a fixed 300 s: an anonymous visitor (one concurrent answer) whose
replica died could not ask again on the other replica for five minutes. Now a slot lives
RATELIMIT_SLOT_TTL_S (30 s) and a live request renews it every third of that, so a dead
process's slots are gone within the TTL while a long answer keeps its own.

Cost on the request path: one ``loop.call_later`` per admitted request with a concurrency
limit (a timer, no task), cancelled by ``settle``; only a request still running after
TTL/3 makes a Redis call (one EVALSHA per limited subject, in one pipeline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from chat.gateway.redis_async import REDIS_ERRORS, redis_scripts
from chat.gateway.scripts import RENEW_SHA

log = logging.getLogger(__name__)

# A request is not kept alive past this (a settle() that never came must not hold a slot forever).
MAX_LEASE_S = 3600.0
_running: set[asyncio.Task[None]] = set()  # strong references to the renewal calls in flight


class Lease:
    """The renewal timer of one admitted request's slots; ``release()`` stops it (in settle)."""

    __slots__ = ("_handle", "_keys", "_member", "_started")

    def __init__(self, keys: Sequence[str], member: str) -> None:
        self._keys, self._member = list(keys), member
        self._started = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(settings.RATELIMIT_SLOT_TTL_S / 3, self._due)

    def _due(self) -> None:
        if self._handle is None:
            return  # released meanwhile
        if time.monotonic() - self._started > MAX_LEASE_S:
            log.warning(
                "a request held its concurrency slot for %.0f s without settling; letting it expire", MAX_LEASE_S
            )
            self._handle = None
            return
        task = asyncio.get_running_loop().create_task(self._renew())
        _running.add(task)
        task.add_done_callback(_running.discard)

    async def _renew(self) -> None:
        ttl_ms = int(settings.RATELIMIT_SLOT_TTL_S * 1000)
        calls: list[tuple[str, list[str], list[Any]]] = [(RENEW_SHA, [k], [self._member, ttl_ms]) for k in self._keys]
        try:
            await redis_scripts(calls)
        except REDIS_ERRORS as exc:  # the slot may expire early: over-admission by one, never a failure
            log.info("could not renew a concurrency slot (%s: %s)", type(exc).__name__, exc)
        if self._handle is not None:
            self._schedule()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def lease(keys: Sequence[str], member: str) -> Lease | None:
    """Start renewing ``member``'s slots under ``keys`` (the concurrency zsets); None when there are none."""
    return Lease(keys, member) if keys else None
