"""Bounded access to the hot-path Redis client (config.redis.get_redis).

Every gateway call on the request path goes through ``redis_call``:

- a time bound on the whole exchange (connect, cluster discovery, a retried pipeline),
  REDIS_TIMEOUT x 2, so a hung Redis never hangs a request;
- a per-event-loop gate of GATEWAY_REDIS_CONCURRENCY calls in flight, below the client's
  connection pool size: the single-node client's pool blocks when exhausted
  (config.redis), but the cluster client's per-node pools raise MaxConnectionsError, and
  a burst of requests must queue for a few microseconds, not be mistaken for an outage.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings
from redis.exceptions import RedisClusterException, RedisError

from config.redis import get_redis

T = TypeVar("T")

# What a Redis outage looks like from redis-py and the socket layer.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(settings.GATEWAY_REDIS_CONCURRENCY)
    return gate


def timeout() -> float:
    return settings.REDIS_TIMEOUT * 2


async def redis_call(fn: Callable[[Any], Awaitable[T]]) -> T:
    """``await fn(client)`` within the gate and the time bound; raises one of REDIS_ERRORS."""

    # asyncio.timeout, not wait_for: no task of its own per call (two event-loop turns and a
    # task object on every round trip of the request path; Python 3.11's wait_for makes one).
    async with asyncio.timeout(timeout()), _gate():
        return await fn(get_redis())
