"""Bounded access to the hot-path Redis client (config.redis.get_redis).

Every gateway call on the request path goes through ``redis_call``:

- a time bound on the whole exchange (connect, cluster discovery, a retried pipeline),
  REDIS_TIMEOUT x 2, so a hung Redis never hangs a request;
- a per-event-loop gate of GATEWAY_REDIS_CONCURRENCY calls in flight, below the client's
  connection pool size: the single-node client's pool blocks when exhausted
  (config.redis), but the cluster client's per-node pools raise MaxConnectionsError, and
  a burst of requests must queue for a few microseconds, not be mistaken for an outage.

The request path's scripts (admit, settle, undo, lease renewals, action limits) go through
``redis_scripts``: a group commit. While GATEWAY_REDIS_PIPELINES of its pipelines are in
flight on an event loop, the calls that arrive meanwhile wait and leave together in the
next one (one write, one read, one pass of redis-py's pipeline machinery for all of them).
A lone request is sent at once, as before; under load the round trips per request fall
with the queue, at the cost of waiting for at most the round trip in flight.

On a single Redis a pipeline is encoded here (``pack``) and written on one pooled
connection (``_exchange``), without redis-py's Pipeline object; a Redis Cluster's goes through
redis-py's cluster pipeline, which routes each command to its slot's node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, RedisClusterException, RedisError, ResponseError

from chat.gateway.scripts import SCRIPTS
from config.per_loop import PerLoop
from config.redis import get_redis
from monitoring import tracing
from monitoring.metrics import REDIS_PIPELINE_CALLS

T = TypeVar("T")

# What a Redis outage looks like from redis-py and the socket layer.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

_gates: PerLoop[asyncio.Semaphore] = PerLoop(lambda: asyncio.Semaphore(settings.GATEWAY_REDIS_CONCURRENCY))


def timeout() -> float:
    return settings.REDIS_TIMEOUT * 2


async def redis_call(fn: Callable[[Any], Awaitable[T]]) -> T:
    """``await fn(client)`` within the gate and the time bound; raises one of REDIS_ERRORS."""

    # asyncio.timeout, not wait_for: no task of its own per call (two event-loop turns and a
    # task object on every round trip of the request path; Python 3.11's wait_for makes one).
    async with asyncio.timeout(timeout()), _gates.get():
        return await fn(get_redis())


Calls = list[tuple[str, list[str], list[Any]]]  # (script sha, keys, args) each
Commands = list[tuple[Any, ...]]  # plain commands, as sent: ("GET", key), ("HINCRBY", key, field, 1)


async def run_scripts(client: Any, calls: Calls, extra: Commands) -> list[Any]:
    """EVALSHA each call (+ plain commands) in one pipeline; re-run NOSCRIPT ones with EVAL."""
    (replies,) = await _pipeline(client, [(calls, extra)])
    if isinstance(replies, BaseException):
        raise replies
    return replies


async def _pipeline(client: Any, batch: list[tuple[Calls, Commands]]) -> list[list[Any] | BaseException]:
    """Several callers' ``run_scripts`` in one pipeline: each gets its replies, or the first
    error among them (one caller's failed command is not another's)."""
    commands: Commands = []
    scripts: list[tuple[str, list[str], list[Any]] | None] = []  # per command: its script call, if one
    for calls, extra in batch:
        for call in calls:
            sha, keys, args = call
            commands.append(("EVALSHA", sha, len(keys), *keys, *args))
            scripts.append(call)
        commands += extra
        scripts += [None] * len(extra)
    if isinstance(client, RedisCluster):
        # A cluster pipeline routes each command to its slot's node (one write per node).
        pipe = client.pipeline(transaction=False)
        for command in commands:
            # execute_command, not pipe.evalsha(): redis-py's cluster pipeline blocks the
            # evalsha (and mget) methods; NOSCRIPT is handled below.
            pipe.execute_command(*command)
        results = await pipe.execute(raise_on_error=False)
    else:
        results = await _exchange(client, commands)
    missing = [
        (i, call)
        for i, (r, call) in enumerate(zip(results, scripts, strict=True))
        if call is not None and isinstance(r, NoScriptError)
    ]
    if missing:
        # First use on this node (or after a restart / failover): EVAL sends the body and
        # caches it there, so later EVALSHAs find it.
        reruns = await asyncio.gather(
            *(client.eval(SCRIPTS[sha], len(keys), *keys, *args) for _, (sha, keys, args) in missing),
            return_exceptions=True,
        )
        for (i, _), r in zip(missing, reruns, strict=True):
            results[i] = r
    out: list[list[Any] | BaseException] = []
    start = 0
    for calls, extra in batch:
        replies = results[start : start + len(calls) + len(extra)]
        start += len(replies)
        out.append(next((r for r in replies if isinstance(r, BaseException)), replies))
    return out


async def _exchange(client: Any, commands: Commands) -> list[Any]:
    """``commands`` on one connection of a single-node client's pool: one write, then a read per
    reply (a command's error reply is its result), with redis-py's reply conversions.

    What redis-py's Pipeline does, without its per-call machinery (a command stack, per-command
    option dicts, a second packing pass, fieldset pre-flight, operation-duration hooks): on
    the request path that machinery cost more CPU than the round trip's system calls (#17).
    A connection error (a pooled connection that died with a Redis restart) is retried once on
    a new connection, as the client's own retry policy (config.redis.reconnect_once) does.
    """
    packed = pack(commands)
    with tracing.client_span(
        "PIPELINE", **{"db.system": "redis", "db.operation.name": "PIPELINE", "db.operation.batch.size": len(commands)}
    ):
        try:
            return await _round_trip(client, packed, commands)
        except RedisConnectionError:
            # redis-py closed the dead connection; the pool opens a new one for the second try.
            return await _round_trip(client, packed, commands)


async def _round_trip(client: Any, packed: bytes, commands: Commands) -> list[Any]:
    pool, callbacks = client.connection_pool, client.response_callbacks
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(packed)
        results: list[Any] = []
        for command in commands:
            try:
                reply = await conn.read_response()
            except ResponseError as exc:
                results.append(exc)
                continue
            convert = callbacks.get(command[0])
            results.append(convert(reply) if convert is not None else reply)
        return results
    finally:
        await pool.release(conn)


def pack(commands: Commands) -> bytes:
    """The RESP encoding of ``commands`` (arrays of bulk strings), as one buffer.

    str, bytes, int and float arguments, as redis-py's encoder takes them (a bool is refused
    there too: True is not a Redis value). Byte for byte what redis-py's ``pack_commands`` gives
    (tests/gateway/test_group_commit.py), at a third of its cost: 4 against 12 us for admit's
    three commands, measured with timeit.
    """
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            if kind is str:
                data = arg.encode()
            elif kind is bytes:
                data = arg
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                raise DataError(f"Redis takes str, bytes, int or float arguments, not {kind.__name__}")
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


async def redis_scripts(calls: Calls, extra: Commands | None = None) -> list[Any]:
    """``run_scripts`` on the hot-path client within ``redis_call``'s time bound, in the event
    loop's group commit (module docstring); raises one of REDIS_ERRORS."""
    async with asyncio.timeout(timeout()):
        return await _committers.get().run(calls, extra or [])


class _GroupCommit:
    """At most GATEWAY_REDIS_PIPELINES pipelines in flight per event loop; who comes meanwhile waits
    for the next one. A caller that gives up (its time bound) is left out of the batch it waits for."""

    # No reference to the loop itself: the committer is the value of a weak-keyed map of loops,
    # and a value holding its key would keep every loop (and its file descriptors) alive.
    __slots__ = ("in_flight", "tasks", "waiting")

    def __init__(self) -> None:
        self.waiting: list[tuple[Calls, Commands, asyncio.Future[list[Any]]]] = []
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, calls: Calls, extra: Commands) -> list[Any]:
        if self.in_flight < settings.GATEWAY_REDIS_PIPELINES and not self.waiting:
            self.in_flight += 1  # alone: sent now, from the caller's own task (no task, no future)
            try:
                REDIS_PIPELINE_CALLS.observe(1)
                async with _gates.get():
                    return await run_scripts(get_redis(), calls, extra)
            finally:
                self.in_flight -= 1
                self._next()
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((calls, extra, reply))
        return await reply

    def _next(self) -> None:
        if self.waiting and self.in_flight < settings.GATEWAY_REDIS_PIPELINES:
            batch, self.waiting = self.waiting, []
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self.tasks.add(task)  # a reference until it ends (the loop keeps only weak ones)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: list[tuple[Calls, Commands, asyncio.Future[list[Any]]]]) -> None:
        try:
            batch = [item for item in batch if not item[2].done()]
            if not batch:
                return
            REDIS_PIPELINE_CALLS.observe(len(batch))
            async with asyncio.timeout(timeout()), _gates.get():
                replies = await _pipeline(get_redis(), [(calls, extra) for calls, extra, _ in batch])
        except Exception as exc:  # the pipeline as a whole: every caller in it sees the failure
            for *_, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
        else:
            for (*_, reply), result in zip(batch, replies, strict=True):
                if reply.done():
                    continue
                if isinstance(result, BaseException):
                    reply.set_exception(result)
                else:
                    reply.set_result(result)
        finally:
            self.in_flight -= 1
            self._next()


_committers: PerLoop[_GroupCommit] = PerLoop(_GroupCommit)
