"""Concurrency slots are leases: short-lived in Redis, renewed while their request runs.

A slot (``...:concurrency``, member -> expiry) is released by ``settle``. A process that
dies mid-answer (a replica killed, an OOM, a deploy without drain) never settles, and its
slots used to stay for a fixed 300 s: an anonymous visitor (one concurrent answer) whose
replica died could not ask again on the other replica for five minutes. Now a slot lives
RATELIMIT_SLOT_TTL_S (30 s) and a live request renews it every third of that, so a dead
process's slots are gone within the TTL while a long answer keeps its own.

Cost on the request path: a dictionary entry per admitted request with a concurrency limit,
removed by ``settle``. One task per event loop renews them all, every TTL/3 while any is
held, in one pipeline: each lease older than TTL/3 (a younger one is renewed at the next
tick, still within its TTL). A per-request timer (``loop.call_later``, then cancelled) cost
about 2 % of the gateway's CPU under load (#17).
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
from config.per_loop import PerLoop

log = logging.getLogger(__name__)

# A request is not kept alive past this (a settle() that never came must not hold a slot forever).
MAX_LEASE_S = 3600.0


class Lease:
    """One admitted request's slots, renewed by its loop's renewer until ``release()`` (in settle)."""

    __slots__ = ("_renewer", "keys", "member", "started")

    def __init__(self, keys: Sequence[str], member: str) -> None:
        self.keys, self.member = list(keys), member
        self.started = time.monotonic()
        self._renewer = _renewers.get()
        self._renewer.hold(self)

    def release(self) -> None:
        self._renewer.leases.pop(self, None)


class _Renewer:
    """The leases of one event loop and the task that renews them (only while there are any)."""

    # The value of a weak-keyed map of loops: it references its loop only through its task,
    # which is dropped when it ends (nothing held), so a finished loop can go.
    __slots__ = ("leases", "period", "task")

    def __init__(self) -> None:
        self.leases: dict[Lease, None] = {}  # an ordered set
        self.task: asyncio.Task[None] | None = None
        self.period = 0.0  # the running task's

    def hold(self, lease: Lease) -> None:
        self.leases[lease] = None
        period = settings.RATELIMIT_SLOT_TTL_S / 3
        if self.task is not None and period < self.period:
            self.task.cancel()  # the TTL was shortened (tests do): this tick would come too late
            self.task = None
        if self.task is None:
            self.period = period
            self.task = asyncio.get_running_loop().create_task(self._run(period))

    async def _run(self, period: float) -> None:
        try:
            while self.leases:
                await asyncio.sleep(period)
                await self._renew(period)
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    async def _renew(self, period: float) -> None:
        now = time.monotonic()
        due = [lease for lease in self.leases if now - lease.started >= period]
        for lease in due:
            if now - lease.started > MAX_LEASE_S:
                log.warning(
                    "a request held its concurrency slot for %.0f s without settling; letting it expire", MAX_LEASE_S
                )
                self.leases.pop(lease, None)
        ttl_ms = int(settings.RATELIMIT_SLOT_TTL_S * 1000)
        calls: list[tuple[str, list[str], list[Any]]] = [
            (RENEW_SHA, [key], [lease.member, ttl_ms]) for lease in due if lease in self.leases for key in lease.keys
        ]
        if not calls:
            return
        try:
            await redis_scripts(calls)
        except REDIS_ERRORS as exc:  # a slot may expire early: over-admission by one, never a failure
            log.info("could not renew concurrency slots (%s: %s)", type(exc).__name__, exc)


_renewers: PerLoop[_Renewer] = PerLoop(_Renewer)


def lease(keys: Sequence[str], member: str) -> Lease | None:
    """Start renewing ``member``'s slots under ``keys`` (the concurrency zsets); None when there are none."""
    return Lease(keys, member) if keys else None
