"""Django's cache on Redis, failing fast: a dead Redis costs one timeout per interval, not one per call.

The cache holds only copies (sessions are ``cached_db``: PostgreSQL is their truth, see
settings), so a Redis outage must cost nothing but the copies:

- While Redis is known down (``monitoring.outages``: a call failed less than
  RATELIMIT_REDIS_RETRY_S ago), calls do not touch the network: reads miss, writes are
  skipped. One call per interval probes Redis again.
- Failures are counted and logged once per interval (``dependency_failures_total{redis}``),
  never as one traceback per call (django-redis' ``IGNORE_EXCEPTIONS`` logging wrote 7,073
  in 66 s during an outage, issue #20).
- A write that could not reach Redis leaves the key stale if Redis kept its data (AOF): a
  session saved or deleted during the outage (a logout!) would come back from the cache
  afterwards. Such keys are remembered (bounded) and deleted when Redis answers again.

Why not Django's ``IGNORE_EXCEPTIONS`` alone: with it, every call still waits for its
connect attempt, and ``cache`` sessions retried their key-creation loop against the dead
server (logins and websocket connects hung ~35 s).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django_prometheus.cache.backends.redis import RedisCache
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config.redis import REDIS_OUTAGE as REDIS

# What "Redis is unreachable" looks like through redis-py (django-redis re-raises the cause);
# a cluster in failover (no master for a slot yet) is unreachable for that while.
UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    SlotNotCoveredError,
)
# Keys whose write failed, deleted once Redis answers again (beyond this many, the oldest are forgotten).
MAX_PENDING_INVALIDATIONS = 10_000


class ClusterClient(DefaultClient):
    """django-redis over a Redis Cluster (``REDIS_CLUSTER=1``): redis-py's cluster client.

    The URL names any node; the client discovers the others and follows MOVED/ASK and
    failovers. Every command django-redis sends for Django's cache API is single-key except
    MGET (``get_many``), which becomes one MGET per slot (``mget_nonatomic``); DEL of many
    keys and pipelines (``set_many``) are split per slot by redis-py, FLUSHDB (``clear``) goes
    to every primary. No multi-key transaction is needed: the cache and the ``cached_db``
    sessions it holds are copies of PostgreSQL.
    """

    def connect(self, index: int = 0) -> Any:
        options = self._options
        try:
            return RedisCluster.from_url(
                self._server[index],
                socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
                socket_timeout=options.get("SOCKET_TIMEOUT"),
                decode_responses=False,
            )
        except RedisClusterException as exc:  # no node answered the discovery: an outage
            raise RedisConnectionError(str(exc)) from exc

    def disconnect(self, index: int = 0, client: Any = None) -> None:
        client = client if client is not None else self._clients[index]
        if client is not None:
            client.close()

    def get_many(self, keys: Any, version: Any = None, client: Any = None) -> dict[Any, Any]:
        if client is None:
            client = self.get_client(write=False)
        if not keys:
            return {}
        by_key = {self.make_key(k, version=version): k for k in keys}
        try:
            values = client.mget_nonatomic(list(by_key))
        except UNREACHABLE as exc:
            raise ConnectionInterrupted(connection=client) from exc
        return {by_key[k]: self.decode(v) for k, v in zip(by_key, values, strict=True) if v is not None}


class FailFastRedisCache(RedisCache):
    """django-redis (with django-prometheus' metrics) that skips a Redis known to be down."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        options = {**params.get("OPTIONS", {}), "IGNORE_EXCEPTIONS": False}
        super().__init__(server, {**params, "OPTIONS": options})
        self._pending: dict[tuple[Any, Any], None] = {}  # (key, version), insertion-ordered
        self._pending_lock = threading.Lock()

    def _remember(self, keys: list[Any], version: Any) -> None:
        with self._pending_lock:
            for key in keys:
                self._pending[(key, version)] = None
            while len(self._pending) > MAX_PENDING_INVALIDATIONS:
                self._pending.pop(next(iter(self._pending)))

    def _flush_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = list(self._pending), {}
        by_version: dict[Any, list[Any]] = {}
        for key, version in pending:
            by_version.setdefault(version, []).append(key)
        try:
            for version, keys in by_version.items():
                RedisCache.delete_many(self, keys, version=version)
        except UNREACHABLE as exc:
            REDIS.failed(exc)
            for version, keys in by_version.items():
                self._remember(keys, version)


def _written_keys(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    first = args[0] if args else kwargs.get("key", kwargs.get("keys", kwargs.get("data")))
    if name in ("set_many",):
        return list(first or {})
    if name in ("delete_many",):
        return list(first or [])
    return [first] if first is not None else []


def _guard(name: str, on_failure: Callable[[tuple[Any, ...], dict[str, Any]], Any], *, write: bool) -> None:
    method = getattr(RedisCache, name)

    @functools.wraps(method)
    def guarded(self: FailFastRedisCache, *args: Any, **kwargs: Any) -> Any:
        if not REDIS.admit(probe_window=settings.REDIS_TIMEOUT * 2):
            if write:
                self._remember(_written_keys(name, args, kwargs), kwargs.get("version"))
            return on_failure(args, kwargs)
        try:
            result = method(self, *args, **kwargs)
        except UNREACHABLE as exc:
            REDIS.failed(exc)
            if write:
                self._remember(_written_keys(name, args, kwargs), kwargs.get("version"))
            return on_failure(args, kwargs)
        was_down = REDIS.down()
        REDIS.succeeded()
        if was_down or self._pending:
            self._flush_pending()
        return result

    setattr(FailFastRedisCache, name, guarded)


def _default(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return kwargs.get("default", args[1] if len(args) > 1 else None)


def _computed_default(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = _default(args, kwargs)
    return value() if callable(value) else value


for _name, _on_failure, _write in (
    ("get", _default, False),
    ("get_many", lambda a, k: {}, False),
    ("has_key", lambda a, k: False, False),
    ("get_or_set", _computed_default, True),
    ("set", lambda a, k: False, True),
    ("add", lambda a, k: False, True),
    ("set_many", lambda a, k: [], True),
    ("touch", lambda a, k: False, True),
    ("delete", lambda a, k: False, True),
    ("delete_many", lambda a, k: 0, True),
    ("incr", lambda a, k: None, True),
    ("decr", lambda a, k: None, True),
    ("clear", lambda a, k: False, False),
):
    _guard(_name, _on_failure, write=_write)
