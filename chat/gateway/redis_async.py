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
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from chat.gateway.scripts import SCRIPTS
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


async def run_scripts(client: Any, calls: list[tuple[str, list[str], list[Any]]], extra: list[tuple]) -> list[Any]:
    """EVALSHA each call (+ plain commands) in one pipeline; re-run NOSCRIPT ones with EVAL."""
    pipe = client.pipeline(transaction=False)
    for sha, keys, args in calls:
        # execute_command, not pipe.evalsha(): redis-py's cluster pipeline blocks the
        # evalsha method (it cannot pre-load scripts on every node); NOSCRIPT is handled below.
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    for cmd, *cmd_args in extra:
        getattr(pipe, cmd)(*cmd_args)
    results = await pipe.execute(raise_on_error=False)
    # Cluster pipelines return a list per multi-node command; ours are all single-key.
    missing = [i for i, r in enumerate(results[: len(calls)]) if isinstance(r, NoScriptError)]
    if missing:
        # First use on this node (or after a restart / failover): EVAL sends the body and
        # caches it there, so later EVALSHAs find it.
        reruns = await asyncio.gather(
            *(client.eval(SCRIPTS[calls[i][0]], len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in missing)
        )
        for i, r in zip(missing, reruns, strict=True):
            results[i] = r
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results
