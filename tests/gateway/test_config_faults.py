"""Hot-path configuration while the database is unreachable: last-known-good values, counted, never a long wait."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError

from chat.errors import ServiceUnavailable
from chat.gateway import auth
from chat.gateway.auth import authenticate_bearer
from chat.gateway.services import apikey_create
from config import local_cache
from config.local_cache import LocalCache
from monitoring.metrics import LOCAL_CACHE_STALE_SERVED
from tests.gateway.conftest import in_thread

pytestmark = [pytest.mark.django_db(transaction=True)]


def _key():
    user = get_user_model().objects.create_user("keyholder", password="pw-unused-123")
    return apikey_create(name="faults", user=user, scopes=["chat"])


def _stale_served(cache: str) -> float:
    return LOCAL_CACHE_STALE_SERVED.labels(cache=cache)._value.get()


async def test_a_known_api_key_keeps_working_while_the_database_is_down(single_redis, settings, monkeypatch):
    settings.GATEWAY_KEY_CACHE_S = 0.05
    created = in_thread(_key)
    assert await authenticate_bearer(f"Bearer {created.full_key}")  # this process has seen it
    await asyncio.sleep(0.1)  # its cached row is now stale

    def unreachable(prefix: str):
        raise OperationalError("connection refused")

    monkeypatch.setattr(auth, "_facts_sync", unreachable)
    before = _stale_served("api_keys")
    principal = await authenticate_bearer(f"Bearer {created.full_key}")
    assert principal is not None and principal.api_key_id == created.api_key.pk
    assert _stale_served("api_keys") == before + 1


async def test_an_unknown_key_while_the_database_is_down_is_a_503_not_a_500(single_redis, monkeypatch):
    created = in_thread(_key)

    def unreachable(prefix: str):
        raise OperationalError("connection refused")

    monkeypatch.setattr(auth, "_facts_sync", unreachable)
    with pytest.raises(ServiceUnavailable) as exc:
        await authenticate_bearer(f"Bearer {created.full_key}")
    assert exc.value.http_status == 503 and exc.value.headers["Retry-After"]


async def test_a_hung_reload_serves_the_old_value_within_the_wait_and_loads_once(monkeypatch):
    monkeypatch.setattr(local_cache, "LOAD_WAIT_S", 0.2)
    cache: LocalCache[str, str] = LocalCache("test_hung", ttl=lambda: 60)
    cache.set("k", "old", ttl=0)  # expired: the next read reloads
    loads: list[int] = []

    async def hung_load() -> str:
        loads.append(1)
        await asyncio.sleep(1.0)  # a database that accepts the connection and never answers
        return "new"

    started = time.perf_counter()
    values = await asyncio.gather(*(cache.aget_or_load("k", hung_load, fallback_on=(OperationalError,))
                                    for _ in range(10)))  # fmt: skip
    assert values == ["old"] * 10 and time.perf_counter() - started < 0.6
    assert loads == [1]  # one reload for every waiter
    await asyncio.sleep(1.0)
    assert cache.get("k") == "new"  # the reload finished in the background


async def test_a_slow_first_load_is_waited_for_and_a_failed_one_serves_the_default(monkeypatch):
    monkeypatch.setattr(local_cache, "LOAD_WAIT_S", 0.1)
    cache: LocalCache[str, str] = LocalCache("test_first", ttl=lambda: 60)

    async def slow_load() -> str:
        await asyncio.sleep(0.3)  # longer than LOAD_WAIT_S: a cold process, a busy database
        return "loaded"

    # Nothing to serve instead, and the default is not served while the load only takes its time
    # (the limiter's policy table: a slow start must not admit requests without limits).
    assert await cache.aget_or_load("a", slow_load, fallback_on=(OperationalError,), default="none") == "loaded"

    async def failing_load() -> str:
        raise OperationalError("connection refused")

    assert await cache.aget_or_load("b", failing_load, fallback_on=(OperationalError,), default="none") == "none"
    with pytest.raises(OperationalError):  # no default: the failure is the caller's to handle
        await cache.aget_or_load("c", failing_load, fallback_on=(OperationalError,))
