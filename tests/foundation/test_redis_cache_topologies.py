"""Django's cache (and the sessions' copies in it) on both Redis topologies the settings offer.

One contract, run against a single Redis (REDIS_URL) and the local Redis Cluster
(REDIS_CLUSTER_URL, three masters with a replica each): the backend the settings build for
``REDIS_CLUSTER=0/1`` does every cache operation Django and the platform use, with keys spread
over many hash slots (a non-cluster client to a cluster node answered MOVED for most of them).
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.core.cache import caches
from django.test import override_settings

from config.redis import REDIS_OUTAGE
from tests.tools import need

pytestmark = pytest.mark.services


def _backend(url: str, cluster: bool) -> dict:
    return {
        "BACKEND": "config.redis_cache.FailFastRedisCache",
        "LOCATION": url,
        "KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "OPTIONS": {
            "CLIENT_CLASS": "config.redis_cache.ClusterClient" if cluster else "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 1.0,
            "SOCKET_TIMEOUT": 1.0,
        },
    }


@pytest.fixture(params=["redis", "cluster"])
def cache(request):
    variable = "REDIS_URL" if request.param == "redis" else "REDIS_CLUSTER_URL"
    url = os.environ.get(variable)
    need(bool(url), f"{variable} unset (deploy/local/up starts it)")
    REDIS_OUTAGE.reset()
    with override_settings(CACHES={"default": _backend(url, request.param == "cluster")}):
        backend = caches["default"]
        yield backend
        backend.delete_many([f"k{i}" for i in range(64)] + ["n", "once", "touched"])
    assert not REDIS_OUTAGE.down(), "a cache call failed against a live Redis"


def test_single_keys(cache):
    cache.set("k1", {"a": [1, 2]}, 60)
    assert cache.get("k1") == {"a": [1, 2]}
    assert cache.add("once", 1) is True and cache.add("once", 2) is False
    assert cache.get("once") == 1
    assert cache.has_key("k1") and not cache.has_key("k2")
    cache.set("touched", "x", 1)
    assert cache.touch("touched", 60) is True
    assert cache.ttl("touched") > 30
    cache.set("n", 1)
    assert cache.incr("n", 5) == 6 and cache.decr("n") == 5
    cache.delete("k1")
    assert cache.get("k1", "gone") == "gone"


def test_many_keys_across_hash_slots(cache):
    values = {f"k{i}": i * 10 for i in range(64)}  # 64 keys: every master of the cluster holds some
    cache.set_many(values, 60)
    assert cache.get_many([*values, "absent"]) == values
    assert cache.delete_many([f"k{i}" for i in range(0, 64, 2)]) in (None, 32)  # Django's API returns None
    left = cache.get_many(list(values))
    assert left == {f"k{i}": i * 10 for i in range(1, 64, 2)}


@pytest.mark.django_db(transaction=True)
def test_sessions_are_cached_and_survive_losing_their_copy(cache):
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cached_db"):
        session = SessionStore()
        session["conversation"] = 42
        session.create()
        key = session.cache_key
        assert cache.get(key) == {"conversation": 42}  # the copy is in Redis
        cache.delete(key)  # evicted (allkeys-lru) or lost with a failed-over master
        assert SessionStore(session.session_key).load() == {"conversation": 42}  # PostgreSQL is the truth
        assert cache.get(key) == {"conversation": 42}  # and the copy is back
        SessionStore(session.session_key).delete()
