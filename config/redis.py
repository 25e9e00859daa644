"""One pooled asyncio Redis client per event loop, for the hot path.

Django's cache API (django-redis) is synchronous; the request path (rate
limiter, response cache, history) talks to Redis through this async client so
it never blocks the event loop. Clients are bound to the loop that created
them, hence one per loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from config.per_loop import PerLoop
from monitoring.outages import outage

# Redis' failure state in this process, shared by every use (the Django cache, history,
# /readyz): after a failure, callers leave Redis alone for RATELIMIT_REDIS_RETRY_S (one probe
# per interval) and the outage is logged once per interval (monitoring.outages).
REDIS_OUTAGE = outage("redis", retry_s=lambda: settings.RATELIMIT_REDIS_RETRY_S)

# Per loop, per (URL, cluster flag): settings overridden in tests get their own client.
_clients: PerLoop[dict[tuple[str, bool], aioredis.Redis]] = PerLoop(dict)


def reconnect_once() -> AsyncRetry:
    """Retry a command once, at once, on a *connection* error (not a timeout).

    After Redis restarts, every pooled connection is dead until used; without this, the first
    command on each one failed and was taken for an outage. A Redis that is really down
    refuses the second attempt just as fast, and a hung one is not waited for twice.
    """
    return AsyncRetry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def redis_enabled() -> bool:
    return bool(settings.REDIS_URL)


def get_redis() -> aioredis.Redis:
    """The client for the running loop. Raises RuntimeError when REDIS_URL is unset.

    With REDIS_CLUSTER=1, REDIS_URL names one node of a Redis Cluster and the client is a
    RedisCluster (same command API; keys of one operation must share a hash slot).
    """
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not configured")
    cluster = bool(settings.REDIS_CLUSTER)
    per_loop = _clients.get()
    client = per_loop.get((settings.REDIS_URL, cluster))
    if client is None and cluster:
        client = RedisCluster.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=settings.REDIS_TIMEOUT,
            socket_timeout=settings.REDIS_TIMEOUT,
            decode_responses=False,
        )
        per_loop[(settings.REDIS_URL, cluster)] = client
    elif client is None:
        # A blocking pool: under a burst, callers wait (up to REDIS_TIMEOUT) for a free
        # connection instead of failing with MaxConnectionsError.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=settings.REDIS_TIMEOUT,
            socket_connect_timeout=settings.REDIS_TIMEOUT,
            socket_timeout=settings.REDIS_TIMEOUT,
            health_check_interval=30,
            retry=reconnect_once(),
            decode_responses=False,
        )
        client = aioredis.Redis(connection_pool=pool)
        per_loop[(settings.REDIS_URL, cluster)] = client
    return client


@contextmanager
def sync_redis() -> Iterator[Any]:
    """A short-lived synchronous client for admin pages and commands (closed afterwards).

    Same URL, cluster mode and timeouts as the hot path's client; the socket timeout is
    longer because SCANs and UNLINK batches take longer than hot-path calls.
    RuntimeError when REDIS_URL is unset.
    """
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not configured")
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.REDIS_TIMEOUT,
        "socket_timeout": settings.REDIS_TIMEOUT * 5,
        "decode_responses": False,
    }
    client: Any
    if settings.REDIS_CLUSTER:
        client = SyncRedisCluster.from_url(settings.REDIS_URL, **options)
    else:
        client = redis.Redis.from_url(settings.REDIS_URL, **options)
    try:
        yield client
    finally:
        client.close()


def key(*parts: object) -> str:
    """A namespaced key: ``key("history", 42) -> "vh:history:42"``."""
    return ":".join([settings.REDIS_KEY_PREFIX, *(str(p) for p in parts)])


def glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a literal prefix matches only itself."""
    for ch in "\\*?[]":
        text = text.replace(ch, "\\" + ch)
    return text
