"""Redis unreachable: the configured fail mode applies, fast, without a 500 (in process)."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.errors import ServiceUnavailable
from chat.gateway.redis_async import REDIS_ERRORS, redis_call, redis_scripts
from chat.gateway.services import CachedAnswer, Subject, admit, cache_put, settle
from monitoring.metrics import RATELIMIT_FALLBACKS

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_fail_open_applies_the_local_limiter(redis_down, make_policy, no_default_policies, settings):
    settings.RATELIMIT_FAIL_MODE = "open"
    make_policy("user", 3, concurrent=2)
    before = RATELIMIT_FALLBACKS.labels(mode="open")._value.get()
    subject = Subject(user_id=1)
    started = time.perf_counter()
    results = [await admit(subject, cache_key="vh:chat:response:x") for _ in range(4)]
    assert time.perf_counter() - started < 1.0
    assert [r.allowed for r in results] == [True, True, False, False]
    assert results[2].reason == "concurrency"
    await settle(subject, results[0], prompt_tokens=1, completion_tokens=1)
    assert (await admit(subject, cache_key=None)).allowed  # a slot was released locally
    refused = await admit(subject, cache_key=None)
    assert not refused.allowed and refused.reason == "requests" and refused.headers()["Retry-After"]
    assert all(r.cached is None for r in results)
    assert RATELIMIT_FALLBACKS.labels(mode="open")._value.get() == before + 1  # one probe, then the circuit


async def test_fail_closed_refuses_with_503(redis_down, make_policy, no_default_policies, settings):
    settings.RATELIMIT_FAIL_MODE = "closed"
    make_policy("user", 3)
    for _ in range(2):
        started = time.perf_counter()
        with pytest.raises(ServiceUnavailable) as exc:
            await admit(Subject(user_id=1), cache_key=None)
        assert time.perf_counter() - started < 1.0
        assert exc.value.http_status == 503 and exc.value.headers["Retry-After"]


async def test_cache_writes_are_skipped_quietly(redis_down):
    await cache_put("vh:chat:response:x", CachedAnswer(content="x"))


async def test_a_blackholed_redis_is_bounded_by_the_timeout(make_policy, no_default_policies, settings, namespace):
    # A non-routable address: connect either hangs (bounded by the timeout) or fails at once.
    settings.REDIS_URL = "redis://10.255.255.1:6379/0"
    settings.REDIS_TIMEOUT = 0.3
    settings.RATELIMIT_FAIL_MODE = "open"
    make_policy("user", 5)
    started = time.perf_counter()
    admission = await admit(Subject(user_id=1), cache_key=None)
    assert admission.allowed
    assert time.perf_counter() - started < 0.3 * 2 + 0.5


async def test_a_redis_that_accepts_and_never_answers_is_bounded_by_the_timeout(
    make_policy, no_default_policies, settings, namespace
):
    # The connection opens and no reply ever comes (a stopped process): the callers' own bound
    # (redis_call, redis_scripts) holds, whatever the client's socket timeout.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    settings.REDIS_URL = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    settings.REDIS_TIMEOUT = 0.2
    settings.RATELIMIT_FAIL_MODE = "open"
    make_policy("user", 5)
    async with server:
        for call in (lambda: redis_scripts([], [("GET", "k")]), lambda: redis_call(lambda r: r.ping())):
            started = time.perf_counter()
            with pytest.raises(REDIS_ERRORS):
                await call()
            assert time.perf_counter() - started < 0.2 * 2 + 0.5
        started = time.perf_counter()
        admission = await admit(Subject(user_id=1), cache_key=None)
        assert admission.allowed
        assert time.perf_counter() - started < 0.2 * 2 + 0.5
