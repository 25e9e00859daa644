"""Core dependency probes: the database and Redis."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
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


def _cache_round_trip() -> str:
    cache.set("readyz:probe", "1", 5)
    if cache.get("readyz:probe") != "1":
        raise RuntimeError("cache round trip failed")
    return settings.CACHES["default"]["BACKEND"].rsplit(".", 2)[-2]


async def check_cache() -> str:
    return await sync_to_async(_cache_round_trip, thread_sensitive=False)()


def register_core_checks() -> None:
    health.register("database", check_database)
    if redis_enabled():
        health.register("redis", check_redis)
