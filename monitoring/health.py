"""Readiness checks: a registry that every app fills in its ``AppConfig.ready``.

A probe is an async callable that returns a short detail string when the
dependency is usable and raises otherwise. ``run_checks`` runs all probes
concurrently, each bounded by a timeout, so /readyz stays fast even when a
dependency hangs (a hung TCP connect counts as down after the timeout).

What the result means (docs/operations.md, "Health probes"):

- ``unavailable``: a *required* check is down: this replica cannot serve its core path
  (the database for writes, or no generation endpoint it could use). /readyz answers 503
  and the load balancer should stop sending it traffic.
- ``degraded``: an optional dependency is down (Redis, search, embeddings, reranker): the
  replica still serves, in its documented degraded way; /readyz answers 200. Taking every
  replica out of service because Redis restarted would turn a degradation into an outage.
- ``ok``: everything answers.

A probe may raise ``Degraded`` instead: the dependency answers but is not whole (an
Elasticsearch cluster in yellow: every shard served, a replica missing). That check reads
``degraded`` and so does the report unless something is down; it is not counted as down.

``cached_report`` runs the checks at most once per READYZ_CACHE_S per process, with one
run in flight at a time however many callers poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Probe = Callable[[], Awaitable[str | None]]


class Degraded(Exception):
    """Raised by a probe whose dependency answers but is not whole; the message says how."""


OK, DEGRADED, UNAVAILABLE = "ok", "degraded", "unavailable"


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe
    required: bool = True


_checks: dict[str, Check] = {}
_providers: list[Callable[[], list[Check]]] = []


def register(name: str, probe: Probe, *, required: bool = True) -> None:
    """Register a fixed check (database, Redis, Elasticsearch ...)."""
    _checks[name] = Check(name, probe, required)


def register_provider(provider: Callable[[], list[Check]]) -> None:
    """Register a callable giving checks computed per call (e.g. one per enabled LLM endpoint).

    Providers are synchronous and must not touch the database; they read state
    that their app keeps in memory.
    """
    _providers.append(provider)


async def gather_checks() -> list[Check]:
    checks = list(_checks.values())
    for provider in _providers:
        checks.extend(await _maybe_async(provider))
    return checks


async def _maybe_async(fn: Callable[[], Any]) -> Any:
    result = fn()
    if asyncio.iscoroutine(result):
        result = await result
    return result


async def _run_one(check: Check, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check.probe(), timeout)
        status = "ok"
    except Degraded as exc:
        status, detail = "degraded", str(exc)[:300]
    except TimeoutError:
        status, detail = "down", f"no answer within {timeout:g}s"
    except Exception as exc:  # a probe failing is data, never a 500
        status, detail = "down", f"{type(exc).__name__}: {exc}"[:300]
    return {
        "name": check.name,
        "status": status,
        "required": check.required,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "detail": detail or "",
    }


async def run_checks(timeout: float) -> dict[str, Any]:
    """Every check, concurrently; the report (see the module docstring for ``status``)."""
    checks = await gather_checks()
    results = await asyncio.gather(*(_run_one(c, timeout) for c in checks))
    down = [r["name"] for r in results if r["status"] == "down"]
    down_required = [r["name"] for r in results if r["status"] == "down" and r["required"]]
    partial = [r["name"] for r in results if r["status"] == "degraded"]
    status = UNAVAILABLE if down_required else DEGRADED if down or partial else OK
    return {
        "status": status,
        "down": down,
        "degraded": [name for name in down if name not in down_required] + partial,
        "checks": {r["name"]: r for r in results},
        "checked_at": time.time(),
    }


class _ReportCache:
    """The last report of this process, refreshed by one run at a time."""

    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None
        self.at = 0.0
        self.task: asyncio.Task[dict[str, Any]] | None = None

    async def get(self, *, timeout: float, max_age: float) -> dict[str, Any]:
        if self.report is not None and time.monotonic() - self.at < max_age:
            return self.report
        loop = asyncio.get_running_loop()
        task = self.task
        if task is None or task.done() or task.get_loop() is not loop:
            task = self.task = loop.create_task(self._refresh(timeout))
        # Every probe is bounded by ``timeout`` and they run concurrently; the margin covers
        # the provider and scheduling. A caller never waits longer, whatever hangs.
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout + 1.0)
        except TimeoutError:
            return self.report or {"status": UNAVAILABLE, "down": ["readyz"], "degraded": [], "checks": {}}

    async def _refresh(self, timeout: float) -> dict[str, Any]:
        report = await run_checks(timeout)
        self.report, self.at = report, time.monotonic()
        return report


_cache = _ReportCache()


async def cached_report(*, timeout: float, max_age: float) -> dict[str, Any]:
    """The readiness report, at most ``max_age`` seconds old (one run of the checks at a time)."""
    return await _cache.get(timeout=timeout, max_age=max_age)


def forget_report() -> None:
    """Drop the cached report (tests)."""
    global _cache
    _cache = _ReportCache()
