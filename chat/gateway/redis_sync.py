"""A short-lived synchronous Redis client for admin pages and management commands.

The hot path uses config.redis.get_redis() (async, pooled per event loop). Admin views
are synchronous and rare: they open a client per request, with the same URL, cluster mode
and bounded timeouts, and close it afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings
from redis.cluster import RedisCluster


@contextmanager
def sync_redis() -> Iterator[Any]:
    """A sync client (redis.Redis or redis.cluster.RedisCluster). RuntimeError when REDIS_URL is unset."""
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not configured")
    options = {
        "socket_connect_timeout": settings.REDIS_TIMEOUT,
        "socket_timeout": settings.REDIS_TIMEOUT * 5,  # SCANs and UNLINK batches take longer than hot-path calls
        "decode_responses": False,
    }
    client: Any
    if getattr(settings, "REDIS_CLUSTER", False):
        client = RedisCluster.from_url(settings.REDIS_URL, **options)
    else:
        client = redis.Redis.from_url(settings.REDIS_URL, **options)
    try:
        yield client
    finally:
        client.close()


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a literal prefix matches only itself."""
    for ch in "\\*?[]":
        text = text.replace(ch, "\\" + ch)
    return text
