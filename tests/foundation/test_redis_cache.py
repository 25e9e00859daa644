"""The Django cache on Redis fails fast, and sessions (cached_db) never depend on it.

A redis-server of the test's own behind a FaultProxy: cutting the proxy is Redis going away.
"""

from __future__ import annotations

import time

import pytest
import redis
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session

from config.redis import REDIS_OUTAGE
from config.redis_cache import FailFastRedisCache
from tests.faults.proxy import FaultProxy
from tests.faults.rig import RedisServer

pytestmark = pytest.mark.services


@pytest.fixture
def cut_redis(settings):
    server = RedisServer()
    server.start()
    proxy = FaultProxy("127.0.0.1", server.port, name="redis")
    settings.RATELIMIT_REDIS_RETRY_S = 0.5
    REDIS_OUTAGE.reset()
    cache = FailFastRedisCache(
        f"redis://127.0.0.1:{proxy.port}/0",
        {"KEY_PREFIX": "t", "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}},
    )
    direct = redis.Redis(port=server.port)
    yield cache, proxy, direct
    REDIS_OUTAGE.reset()
    direct.close()
    proxy.close()
    server.close()


def test_a_dead_redis_costs_one_attempt_per_interval_not_one_per_call(cut_redis):
    cache, proxy, _ = cut_redis
    cache.set("k", "v")
    assert cache.get("k") == "v"
    proxy.cut()
    started = time.perf_counter()
    assert cache.get("k", "default") == "default"
    results = [cache.get("k") for _ in range(200)]  # skipped: Redis is known down
    assert results == [None] * 200 and "k" not in cache
    assert time.perf_counter() - started < 1.0
    assert REDIS_OUTAGE.down()


def test_a_key_written_during_the_outage_is_deleted_when_redis_answers_again(cut_redis):
    cache, proxy, direct = cut_redis
    cache.set("session", "logged-in")
    proxy.cut()
    cache.delete("session")  # a logout while Redis is away: Redis kept the old value
    assert direct.exists(cache.make_and_validate_key("session")) == 1
    proxy.restore()
    time.sleep(0.6)  # the retry interval
    assert cache.get("other") is None  # the first call that reaches Redis again...
    assert direct.exists(cache.make_and_validate_key("session")) == 0  # ...deleted the stale copy
    assert not REDIS_OUTAGE.down()


@pytest.mark.django_db(transaction=True)
def test_sessions_are_created_and_read_from_the_database_while_the_cache_is_down(settings):
    from tests.live import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "config.redis_cache.FailFastRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    REDIS_OUTAGE.reset()
    started = time.perf_counter()
    session = SessionStore()
    session["chat"] = True
    session.create()  # Django's cache-only sessions looped here until Redis came back
    loaded = SessionStore(session.session_key).load()
    assert time.perf_counter() - started < 1.5
    assert loaded == {"chat": True}
    assert Session.objects.filter(session_key=session.session_key).exists()
    REDIS_OUTAGE.reset()
