"""Each real service is reached through the platform's own code paths."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

pytestmark = pytest.mark.services


@pytest.mark.django_db
def test_it_migrates_on_postgresql():
    assert connection.vendor == "postgresql"
    applied = {app for app, _ in MigrationRecorder(connection).applied_migrations()}
    assert {"auth", "sessions", "inference", "knowledge", "chat", "gateway"} <= applied


def test_it_round_trips_through_djangos_cache_on_redis():
    assert "redis" in settings.CACHES["default"]["BACKEND"].lower()
    cache.set("foundation:probe", {"한글": "값"}, 30)
    assert cache.get("foundation:probe") == {"한글": "값"}
    # The value really lives in Redis, under the platform's key prefix.
    raw = redis.Redis.from_url(settings.REDIS_URL)
    assert raw.exists(f"{settings.REDIS_KEY_PREFIX}:1:foundation:probe") == 1
    cache.delete("foundation:probe")
    assert raw.exists(f"{settings.REDIS_KEY_PREFIX}:1:foundation:probe") == 0
