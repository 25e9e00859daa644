"""Core dependency probes of /readyz: the database and Redis (the project's own infrastructure).

Registered by ``config.apps.PlatformConfig``; each app registers its own (inference: its
endpoints; knowledge: the search engine).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import connection

from config.redis import get_redis, redis_enabled
from monitoring import health


def _ping_database() -> str:
    # A real query through Django's connection (pooled on PostgreSQL).
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    vendor = connection.vendor
    connection.close()
    return vendor


async def check_database() -> str:
    # Not thread-sensitive: a hung database must not block the shared sync thread.
    return await sync_to_async(_ping_database, thread_sensitive=False)()


async def check_redis() -> str:
    client = get_redis()
    await client.ping()
    info = await client.info("server")
    return f"redis {info.get('redis_version', '?')}"


def register_core_checks() -> None:
    health.register("database", check_database)
    if redis_enabled():
        health.register("redis", check_redis)
