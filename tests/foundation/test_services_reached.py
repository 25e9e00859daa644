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


async def test_it_reads_cluster_health_through_the_search_backend():
    from knowledge.search import get_search_backend

    backend = get_search_backend()
    detail = await backend.ping()
    assert detail.startswith("elasticsearch green") or detail.startswith("elasticsearch yellow"), detail


@pytest.mark.parametrize("kind", ["generation", "embedding", "reranker"])
async def test_it_reaches_each_model_server_through_the_inference_clients(kind):
    """Triton: server + model readiness and metadata via tritonclient; LLM: /v1/models via the generation client."""
    from inference.config import env_endpoint_specs
    from inference.health import probe_config

    (spec,) = [s for s in env_endpoint_specs() if s.kind == kind]
    result = await probe_config(spec.as_config(), timeout=10)
    assert result.ok, result.detail
    if kind == "generation":
        assert settings.VLLM_MODEL in result.detail  # listed by /v1/models
    elif kind == "embedding":
        assert "dim 384" in result.detail  # read from Triton's model metadata
