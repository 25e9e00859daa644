"""Core dependency probes of /readyz: the database and Redis (the project's own infrastructure).

Registered by ``config.apps.PlatformConfig``; each app registers its own (inference: its
endpoints; knowledge: the search engine).

- database: required. Without it this replica cannot store a question or an answer.
- redis: reported, not required. Without it rate limits apply per process (or refuse, per
  RATELIMIT_FAIL_MODE), the response cache and history are skipped and sessions are read
  from the database: the replica serves (docs/operations.md, "Dependency faults").
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from django.db import connection

from config.redis import REDIS_OUTAGE, get_redis, redis_enabled
from monitoring import health


@cache
def _db_executor() -> ThreadPoolExecutor:
    # Its own thread: a hung database holds this one, never a thread other requests need.
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz-db")


def _ping_database() -> str:
    # A real query through Django's connection (pooled on PostgreSQL), always given back:
    # a failed check must not leave a broken connection in its thread for the next one.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return connection.vendor
    finally:
        connection.close()


_in_flight: asyncio.Future[str] | None = None


async def check_database() -> str:
    """SELECT 1 in the check's own thread; a check still running (hung database) is awaited, not repeated."""
    global _in_flight
    loop = asyncio.get_running_loop()
    future = _in_flight
    if future is None or future.done() or future.get_loop() is not loop:
        future = _in_flight = loop.run_in_executor(_db_executor(), _ping_database)
        # /readyz may stop waiting (its timeout) before the ping ends: its outcome is read here regardless.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return await asyncio.shield(future)


async def check_redis() -> str:
    client = get_redis()
    try:
        await client.ping()
        info = await client.info("server")
    except Exception as exc:
        REDIS_OUTAGE.failed(exc)
        raise
    REDIS_OUTAGE.succeeded()
    return f"redis {info.get('redis_version', '?')}"


def register_core_checks() -> None:
    health.register("database", check_database)
    if redis_enabled():
        health.register("redis", check_redis, required=False)
