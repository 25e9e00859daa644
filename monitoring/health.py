"""Readiness checks: a registry that every app fills in its ``AppConfig.ready``.

A probe is an async callable that returns a short detail string when the
dependency is usable and raises otherwise. ``run_checks`` runs all probes
concurrently, each bounded by a timeout, so /readyz stays fast even when a
dependency hangs (a hung TCP connect counts as down after the timeout).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Probe = Callable[[], Awaitable[str | None]]


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
    checks = await gather_checks()
    results = await asyncio.gather(*(_run_one(c, timeout) for c in checks))
    down_required = [r["name"] for r in results if r["status"] != "ok" and r["required"]]
    return {
        "status": "ok" if not down_required else "unavailable",
        "down": [r["name"] for r in results if r["status"] != "ok"],
        "checks": {r["name"]: r for r in results},
    }
