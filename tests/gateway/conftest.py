"""Gateway fixtures: real Redis (single and Cluster), an isolated key namespace per test.

Every test gets its own REDIS_KEY_PREFIX, so it neither sees nor disturbs the keys of
other tests or of a development server sharing the same Redis; the namespace is purged
afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings as django_settings
from django.db import connections

from chat.gateway import budgets, cache, limiter, services
from chat.gateway.access import forget_access
from chat.gateway.auth import forget_cached_keys
from chat.gateway.services import keys_purge_prefix, redis_state_reset


def in_thread(fn, *args, **kwargs):
    """Run sync ORM code from an async test (the event loop's thread refuses it).

    The worker thread has its own database connection, so the tests that use this are
    transactional (rows are committed and visible to every thread and process).
    """

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()  # give the pooled connection back

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_process_state() -> None:
    limiter.invalidate_policies()
    budgets.invalidate_budgets()
    forget_access()
    limiter.local_limiter.reset()
    cache.forget_ttl_override()
    forget_cached_keys()
    redis_state_reset()


@pytest.fixture
def namespace(settings):
    """A fresh platform key prefix for this test."""
    settings.REDIS_KEY_PREFIX = f"vhtest{uuid.uuid4().hex[:10]}"
    _reset_process_state()
    yield settings.REDIS_KEY_PREFIX
    _reset_process_state()


def _assert_redis_stayed_up() -> None:
    # A test on real Redis that silently used the local fallback would prove nothing.
    assert not services.redis_failure_seen(), "the gateway lost Redis during the test and fell back"


def _purge(settings) -> None:
    # Everything under the test prefix: keys_purge_prefix takes a prefix relative to it.
    for family in ("ratelimit", "chat", "gateway", "session", "apikey", "usage", "budget"):
        try:
            keys_purge_prefix(prefix=family)
        except Exception:
            pass


@pytest.fixture(params=["redis", "cluster"])
def any_redis(request, settings, namespace):
    """Both topologies: a single Redis (REDIS_URL) and the Redis Cluster (REDIS_CLUSTER_URL)."""
    if request.param == "redis":
        url = os.environ.get("REDIS_URL")
        settings.REDIS_CLUSTER = False
    else:
        url = os.environ.get("REDIS_CLUSTER_URL")
        settings.REDIS_CLUSTER = True
    if not url:
        pytest.skip(f"{request.param}: no URL in the environment (run deploy/local/up)")
    settings.REDIS_URL = url
    yield request.param
    _assert_redis_stayed_up()
    _purge(settings)


@pytest.fixture
def single_redis(settings, namespace):
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL unset (run deploy/local/up)")
    settings.REDIS_URL = url
    settings.REDIS_CLUSTER = False
    yield
    _assert_redis_stayed_up()
    _purge(settings)


@pytest.fixture
def redis_down(settings, namespace):
    """REDIS_URL pointing at a closed port."""
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_CLUSTER = False
    yield


@pytest.fixture
def make_policy(transactional_db):
    """Create (and make default for its scope) a policy; the process forgets its cached table."""
    from chat.gateway.models import RateLimitPolicy

    def make(scope: str, requests: int, **kwargs):
        return in_thread(_make, scope, requests, **kwargs)

    def _make(scope: str, requests: int, *, window: int = 60, tokens: int = 0, concurrent: int = 0, default=True):
        if default:
            RateLimitPolicy.objects.filter(scope=scope, is_default=True).update(is_default=False)
        policy = RateLimitPolicy.objects.create(
            name=f"test-{scope}-{uuid.uuid4().hex[:6]}",
            scope=scope,
            is_default=default,
            requests=requests,
            window_seconds=window,
            tokens_per_minute=tokens,
            concurrent_requests=concurrent,
        )
        limiter.invalidate_policies()
        return policy

    return make


@pytest.fixture
def no_default_policies(transactional_db):
    from chat.gateway.models import RateLimitPolicy

    in_thread(lambda: RateLimitPolicy.objects.update(is_default=False))
    limiter.invalidate_policies()


def dev_env() -> dict[str, str]:
    """Env for a live server child: DEBUG=1 when the test run uses the development SECRET_KEY."""
    env = {}
    if django_settings.SECRET_KEY.startswith("django-insecure"):
        env["DEBUG"] = "1"
    return env
