"""The in-memory endpoint registry of one process, and the runtime state of each endpoint.

The request path asks ``get_registry().endpoints(kind)``: the first call loads the
enabled ``ModelEndpoint`` rows (after syncing the environment's endpoints: the DB is
never touched during import or ``AppConfig.ready``), later calls answer from memory. Every ``INFERENCE_REGISTRY_REFRESH_S`` the snapshot is
reloaded in the background (other processes' admin edits); a save through the
services or the admin invalidates it in this process, and the next call waits for
the reload. When the database cannot be read and nothing was loaded yet, the
endpoints implied by the environment are used, so generation keeps working.

Runtime state (breaker, limiter, health, pooled clients) survives a reload as
long as the endpoint's configuration did not change.

The same load reads the model groups (``catalog()``: names and aliases clients ask
for, fallback chains); ``for_group(name)`` is the registry as one group sees it (only
its endpoints), which the generation code takes in place of the whole registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from config.per_loop import PerLoop
from inference.breaker import STATE_VALUES, CircuitBreaker
from inference.catalog import ModelCatalog
from inference.config import OPENAI, EndpointConfig, GroupConfig, env_endpoint_specs, env_group_specs
from inference.limiter import ConcurrencyLimiter
from monitoring import metrics

# With no endpoint of the kind asked for, the table is read again at most this often (and waited for at most this long).
EMPTY_RECHECK_S = 1.0

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RegistryData:
    """What one load reads: enabled endpoints and enabled model groups."""

    endpoints: list[EndpointConfig]
    groups: list[GroupConfig] = field(default_factory=list)


Loader = Callable[[], Awaitable[RegistryData]]


@dataclass(slots=True)
class HealthState:
    ok: bool | None = None
    latency_ms: float | None = None
    error: str = ""
    checked_at: float | None = None


class EndpointRuntime:
    """One endpoint's configuration plus what this process knows and holds for it."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.breaker = CircuitBreaker(
            failure_threshold=settings.INFERENCE_BREAKER_FAILURES,
            cooldown_s=settings.INFERENCE_BREAKER_COOLDOWN_S,
            on_change=lambda state: metrics.BREAKER_STATE.labels(self.name).set(STATE_VALUES[state]),
        )
        self.limiter = ConcurrencyLimiter(
            max_concurrent=config.max_concurrent,
            max_queue=config.max_queue,
            queue_timeout_s=settings.INFERENCE_QUEUE_TIMEOUT_S,
            name=config.name,
            on_change=self._report_load,
            on_wait=lambda seconds: metrics.QUEUE_WAIT.labels(self.name).observe(seconds),
        )
        self.health = HealthState()
        # Clients hold sockets bound to an event loop: one per loop (normally exactly one).
        self._clients: PerLoop[tuple[Any, AsyncGenerator]] = PerLoop(self._new_client)
        metrics.BREAKER_STATE.labels(self.name).set(0)

    def _report_load(self, active: int, waiting: int) -> None:
        metrics.child(metrics.INFERENCE_IN_FLIGHT, self.name).set(active)
        metrics.child(metrics.QUEUE_DEPTH, self.name).set(waiting)

    def __repr__(self) -> str:
        return f"<EndpointRuntime {self.name} {self.kind} {self.breaker.state}>"

    @property
    def outstanding(self) -> int:
        return self.limiter.outstanding

    def usable(self) -> bool:
        """Breaker lets requests through and the last health check did not fail."""
        return self.breaker.available() and self.health.ok is not False

    def client(self) -> Any:
        """The pooled client of this endpoint for the running loop (created on first use).

        The client is closed when its loop shuts down (``asyncio.run`` and asgiref's
        ``async_to_sync`` both end with ``loop.shutdown_asyncgens()``), so short-lived
        loops do not leak connections.
        """
        return self._clients.get()[0]

    def _new_client(self) -> tuple[Any, AsyncGenerator]:
        client = new_client(self.config)
        return client, _close_at_loop_shutdown(client)

    async def aclose(self) -> None:
        """Close the clients of the running loop (others close with their loop)."""
        entry = self._clients.pop()
        if entry is not None:
            _client, closer = entry
            await closer.aclose()  # closes the client once, through the shutdown hook

    def record_health(self, *, ok: bool, latency_ms: float | None, error: str = "") -> None:
        self.health = HealthState(ok, latency_ms, error, time.time())
        metrics.ENDPOINT_UP.labels(self.name, self.kind).set(1 if ok else 0)


def _close_at_loop_shutdown(client: Any) -> AsyncGenerator[None, None]:
    """An async generator, started here, whose ``finally`` closes ``client``.

    The running loop tracks started async generators and closes them in
    ``shutdown_asyncgens``: the one hook asyncio offers for "this loop is ending".
    """

    async def closer() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await client.aclose()

    gen = closer()
    try:
        gen.asend(None).send(None)  # run to the first yield (no await before it)
    except StopIteration:
        pass
    return gen


def new_client(config: EndpointConfig) -> Any:
    """A fresh client for ``config`` (OpenAI-compatible or Triton, by protocol)."""
    if config.protocol == OPENAI:
        from inference.clients.openai import OpenAIClient

        return OpenAIClient(config)
    from inference.clients.triton import TritonClient

    return TritonClient(config)


class Registry:
    def __init__(self, loader: Loader | None = None, *, refresh_s: float | None = None) -> None:
        self._loader = loader or self._load_from_database
        self._refresh_s = settings.INFERENCE_REGISTRY_REFRESH_S if refresh_s is None else refresh_s
        self._runtimes: dict[str, EndpointRuntime] | None = None
        self._catalog = ModelCatalog()
        self._by_group: dict[str, list[EndpointRuntime]] = {}
        self._loaded_at = 0.0
        self._stale = False
        self._load_task: asyncio.Task[None] | None = None
        self._retired: list[EndpointRuntime] = []
        self._empty_checked_at = 0.0

    async def _load_from_database(self) -> RegistryData:
        # Every reload re-applies the environment (a few reads; writes only on a difference),
        # so env-managed endpoints come back if their rows were deleted.
        return await load_from_database(sync_env=settings.INFERENCE_SYNC_ENDPOINTS)

    @classmethod
    def static(cls, configs: Iterable[EndpointConfig], groups: Iterable[GroupConfig] = ()) -> Registry:
        """A registry over fixed configurations (tests, benchmarks): never reloads."""
        data = RegistryData(list(configs), list(groups))

        async def loader() -> RegistryData:
            return data

        return cls(loader, refresh_s=float("inf"))

    @property
    def loaded(self) -> bool:
        return self._runtimes is not None

    def invalidate(self) -> None:
        """Reload before the next request (thread-safe: only sets a flag)."""
        self._stale = True

    def snapshot(self) -> list[EndpointRuntime]:
        """Current runtimes without loading (for sync callers such as /readyz providers)."""
        return list((self._runtimes or {}).values())

    async def endpoints(self, kind: str) -> list[EndpointRuntime]:
        """Enabled endpoints of ``kind``; loads on first use, refreshes in the background.

        None of ``kind`` in this copy: the table is read again first (at most once per
        EMPTY_RECHECK_S), so a request does not fail on a copy that missed a change (an
        endpoint added, or re-created by another process's environment sync).
        """
        if self._runtimes is None or self._stale:
            await self._reload()
        elif time.monotonic() - self._loaded_at > self._refresh_s:
            self._reload_in_background()
        found = [rt for rt in (self._runtimes or {}).values() if rt.kind == kind]
        if not found and self._refresh_s != float("inf") and self._empty_recheck_due():
            # Waited for at most EMPTY_RECHECK_S: a hung database must not hold the request
            # (the load goes on in the background; _reload shields it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EMPTY_RECHECK_S):
                    await self._reload()
            found = [rt for rt in (self._runtimes or {}).values() if rt.kind == kind]
        return found

    def _empty_recheck_due(self) -> bool:
        now = time.monotonic()
        if now - self._empty_checked_at <= EMPTY_RECHECK_S:
            return False
        self._empty_checked_at = now
        return True

    async def all_endpoints(self) -> list[EndpointRuntime]:
        if self._runtimes is None or self._stale:
            await self._reload()
        return self.snapshot()

    async def catalog(self) -> ModelCatalog:
        """The enabled model groups (loads on first use, refreshes like ``endpoints``)."""
        if self._runtimes is None or self._stale:
            await self._reload()
        elif time.monotonic() - self._loaded_at > self._refresh_s:
            self._reload_in_background()
        return self._catalog

    def for_group(self, group: str) -> GroupView:
        """This registry as the model group ``group`` sees it: only its endpoints."""
        return GroupView(self, group)

    def group_endpoints(self, group: str) -> list[EndpointRuntime]:
        """The loaded endpoints of ``group`` (memory only)."""
        return self._by_group.get(group, [])

    def group_usable(self, group: str) -> bool:
        """Whether some endpoint of the group may answer (breaker closed, last check not failed).

        Before the first load nothing is known: True (the request finds out).
        """
        if self._runtimes is None:
            return True
        return any(rt.usable() for rt in self._by_group.get(group, ()))

    def group_context_window(self, group: GroupConfig) -> int | None:
        """The group's own window, else the smallest of its endpoints', else None (unknown)."""
        if group.context_window:
            return group.context_window
        windows = [rt.config.context_window for rt in self._by_group.get(group.name, ()) if rt.config.context_window]
        return min(windows) if windows else None

    async def aclose(self) -> None:
        """Close this loop's clients of every endpoint (end of a command, of a test)."""
        for rt in [*self.snapshot(), *self._retired]:
            await rt.aclose()
        self._retired.clear()

    async def _reload(self) -> None:
        # Concurrent first callers share one load.
        task = self._load_task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._load_task = asyncio.create_task(self._load())
        await asyncio.shield(task)

    def _reload_in_background(self) -> None:
        if self._load_task is None or self._load_task.done():
            self._loaded_at = time.monotonic()  # one reload per period even if it fails
            self._load_task = asyncio.create_task(self._load())

    async def _load(self) -> None:
        self._stale = False
        try:
            data = await self._loader()
        except Exception as exc:
            if self._runtimes is not None:
                logger.warning("endpoint registry reload failed, keeping the current one: %s", exc)
                self._loaded_at = time.monotonic()
                return
            logger.warning("endpoint registry: database unavailable (%s); using the environment's endpoints", exc)
            data = RegistryData([spec.as_config() for spec in env_endpoint_specs()], env_group_specs())
            # Try the database again soon.
            self._loaded_at = time.monotonic() - self._refresh_s + min(self._refresh_s, 5.0)
            self._apply(data.endpoints)
            self._apply_groups(data.groups)
            return
        self._apply(data.endpoints)
        self._apply_groups(data.groups)
        self._loaded_at = time.monotonic()

    def _apply_groups(self, groups: list[GroupConfig]) -> None:
        self._catalog = ModelCatalog(groups)
        by_group: dict[str, list[EndpointRuntime]] = {}
        for rt in (self._runtimes or {}).values():
            if rt.config.group:
                by_group.setdefault(rt.config.group, []).append(rt)
        self._by_group = by_group

    def _apply(self, configs: list[EndpointConfig]) -> None:
        current = self._runtimes or {}
        fresh: dict[str, EndpointRuntime] = {}
        for config in configs:
            existing = current.get(config.name)
            if existing is not None and existing.config == config:
                fresh[config.name] = existing
            else:
                fresh[config.name] = EndpointRuntime(config)
                if existing is not None:
                    self._retired.append(existing)
        for name, rt in current.items():
            if name not in fresh:
                self._retired.append(rt)
                metrics.ENDPOINT_UP.labels(rt.name, rt.kind).set(0)
        self._runtimes = fresh
        if self._retired:
            # Close replaced clients once in-flight requests had time to finish with them.
            retired, self._retired = self._retired, []
            asyncio.get_running_loop().call_later(60, lambda: asyncio.ensure_future(_close_all(retired)))


async def _close_all(runtimes: list[EndpointRuntime]) -> None:
    for rt in runtimes:
        try:
            await rt.aclose()
        except Exception:  # closing is best effort
            logger.debug("closing the clients of %s failed", rt.name, exc_info=True)


class GroupView:
    """A registry as one model group sees it: ``endpoints(kind)`` are the group's endpoints.

    The generation code takes it in place of the registry, so routing, balancing,
    affinity, breakers and failover work unchanged, among the group's endpoints only.
    """

    __slots__ = ("group", "registry")

    def __init__(self, registry: Registry, group: str) -> None:
        self.registry = registry
        self.group = group

    async def endpoints(self, kind: str) -> list[EndpointRuntime]:
        return [rt for rt in await self.registry.endpoints(kind) if rt.config.group == self.group]

    def snapshot(self) -> list[EndpointRuntime]:
        return [rt for rt in self.registry.snapshot() if rt.config.group == self.group]


async def load_from_database(*, sync_env: bool) -> RegistryData:
    """Enabled endpoints and groups from the database (syncing the environment's ones first when asked)."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(_load_from_database_sync, thread_sensitive=False)(sync_env)


def _load_from_database_sync(sync_env: bool) -> RegistryData:
    from django.db import connection

    from inference import selectors
    from inference.endpoint_sync import sync_from_env

    try:
        if sync_env:
            sync_from_env()
        endpoints = [
            EndpointConfig.from_model(row, group=row.group.name if row.group_id else "")
            for row in selectors.endpoint_list(enabled=True).select_related("group")
        ]
        groups = [GroupConfig.from_model(row) for row in selectors.group_list(enabled=True)]
        return RegistryData(endpoints, groups)
    finally:
        # A worker thread's connection is not closed by Django's request cycle.
        connection.close()


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (created lazily; no database access here)."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def set_registry(registry: Registry | None) -> Registry | None:
    """Swap the process-wide registry (tests, benchmarks); returns the previous one."""
    global _registry
    previous, _registry = _registry, registry
    return previous
