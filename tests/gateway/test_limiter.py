"""The Redis limiter against a real Redis and a real Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest

from chat.errors import AuthenticationRequired, RateLimited
from chat.gateway import limiter
from chat.gateway.services import Subject, admit, settle
from chat.renderers.openai import openai_error_body
from config.redis import get_redis

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


async def test_it_lets_exactly_the_limit_through_100_parallel_requests(any_redis, make_policy, no_default_policies):
    make_policy("user", 10)
    subject = Subject(user_id=42)
    admissions = await asyncio.gather(*(admit(subject, cache_key=None) for _ in range(100)))
    assert sum(a.allowed for a in admissions) == 10
    refused = [a for a in admissions if not a.allowed]
    assert {a.scope for a in refused} == {"user"}
    assert all(a.retry_after_s and 0 < a.retry_after_s <= 60 for a in refused)
    # Another subject has its own window.
    assert (await admit(Subject(user_id=43), cache_key=None)).allowed


async def test_it_keeps_one_subjects_keys_in_one_cluster_slot(any_redis, make_policy, no_default_policies):
    make_policy("user", 5, tokens=100, concurrent=2)
    check = limiter.checks_for(Subject(user_id=42), await limiter.policies())[0]
    assert check.keys[0].endswith(":ratelimit:{user:42}:60")
    assert check.keys[1].endswith(":ratelimit:{user:42}:tokens")
    assert check.keys[2].endswith(":ratelimit:{user:42}:concurrency")
    if any_redis == "cluster":
        client = get_redis()
        slots = {client.keyslot(k) for k in check.keys}
        assert len(slots) == 1


async def test_it_reports_limit_headers(any_redis, make_policy, no_default_policies):
    make_policy("user", 3)
    subject = Subject(user_id=7)
    first = await admit(subject, cache_key=None)
    assert first.headers()["X-RateLimit-Limit"] == "3"
    assert first.headers()["X-RateLimit-Remaining"] == "2"
    assert 59 <= int(first.headers()["X-RateLimit-Reset"]) <= 60
    for _ in range(2):
        await admit(subject, cache_key=None)
    refused = await admit(subject, cache_key=None)
    assert not refused.allowed
    h = refused.headers()
    assert h["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(h["Retry-After"]) <= 60
    err = refused.as_error()
    assert isinstance(err, RateLimited) and err.http_status == 429
    body = err.as_dict()["error"]
    assert body["code"] == "rate_limited"
    assert body["retry_after"] == int(h["Retry-After"]) and body["limit"] == 3 and body["remaining"] == 0
    openai = openai_error_body(refused.as_error())["error"]
    assert openai["type"] == "requests" and openai["code"] == "rate_limit_exceeded"


async def test_it_frees_the_window_as_it_slides(any_redis, make_policy, no_default_policies):
    make_policy("user", 2, window=1)
    subject = Subject(user_id=8)
    assert (await admit(subject, cache_key=None)).allowed
    assert (await admit(subject, cache_key=None)).allowed
    assert not (await admit(subject, cache_key=None)).allowed
    await asyncio.sleep(1.1)
    assert (await admit(subject, cache_key=None)).allowed


async def test_it_charges_tokens_after_the_answer(any_redis, make_policy, no_default_policies):
    make_policy("user", 100, tokens=50)
    subject = Subject(user_id=9)
    a = await admit(subject, cache_key=None)
    assert a.allowed
    await settle(subject, a, prompt_tokens=30, completion_tokens=25)
    refused = await admit(subject, cache_key=None)
    assert not refused.allowed and refused.reason == "tokens" and refused.limit == 50
    assert openai_error_body(refused.as_error())["error"]["type"] == "tokens"
    assert 50 <= refused.retry_after_s <= 60


async def test_it_holds_and_releases_concurrency_slots(any_redis, make_policy, no_default_policies):
    make_policy("user", 100, concurrent=2)
    subject = Subject(user_id=10)
    a = await admit(subject, cache_key=None)
    b = await admit(subject, cache_key=None)
    c = await admit(subject, cache_key=None)
    assert a.allowed and b.allowed and not c.allowed and c.reason == "concurrency"
    await settle(subject, a, prompt_tokens=0, completion_tokens=0)
    await settle(subject, a, prompt_tokens=0, completion_tokens=0)  # idempotent
    assert (await admit(subject, cache_key=None)).allowed
    assert not (await admit(subject, cache_key=None)).allowed


async def test_a_running_request_keeps_its_slot_and_a_dead_ones_slot_frees_within_the_lease(
    any_redis, make_policy, no_default_policies, settings
):
    """Slots are leases (RATELIMIT_SLOT_TTL_S) renewed while the request runs: a long answer keeps
    its slot past the TTL; a request whose process died (no renewal, no settle) frees it within it."""
    settings.RATELIMIT_SLOT_TTL_S = 1.5  # renewed every 0.5 s
    make_policy("user", 100, concurrent=1)
    subject = Subject(user_id=12)
    running = await admit(subject, cache_key=None)
    assert running.allowed
    await asyncio.sleep(2.5)  # past the TTL: renewed meanwhile
    assert not (await admit(subject, cache_key=None)).allowed
    await settle(subject, running, prompt_tokens=0, completion_tokens=0)

    died = await admit(subject, cache_key=None)
    assert died.allowed
    died.token.lease.release()  # the process is gone: nothing renews, nothing settles
    assert not (await admit(subject, cache_key=None)).allowed
    deadline = asyncio.get_running_loop().time() + 5
    while not (after := await admit(subject, cache_key=None)).allowed:
        assert asyncio.get_running_loop().time() < deadline, "the dead request's slot never freed"
        await asyncio.sleep(0.1)
    await settle(subject, after, prompt_tokens=0, completion_tokens=0)


async def test_a_refusal_by_one_scope_is_not_counted_by_the_others(any_redis, make_policy, no_default_policies):
    make_policy("global", 1000)
    make_policy("user", 1)
    subject = Subject(user_id=11)
    assert (await admit(subject, cache_key=None)).allowed
    for _ in range(5):
        assert not (await admit(subject, cache_key=None)).allowed
    table = await limiter.policies()
    g = next(c for c in limiter.checks_for(subject, table) if c.scope == "global")
    assert await get_redis().zcard(g.keys[0]) == 1  # only the admitted request


async def test_it_limits_api_keys_by_their_own_policy(any_redis, make_policy, no_default_policies):
    make_policy("api_key", 2)
    own = make_policy("api_key", 4, default=False)
    make_policy("user", 1)
    plain = Subject(user_id=12, api_key_id=1)
    special = Subject(user_id=12, api_key_id=2, api_key_policy_id=own.pk)
    assert [(await admit(plain, cache_key=None)).allowed for _ in range(3)] == [True, True, False]
    assert [(await admit(special, cache_key=None)).allowed for _ in range(5)] == [True] * 4 + [False]


async def test_it_limits_anonymous_chat_per_session_and_ip(any_redis, make_policy, no_default_policies, settings):
    settings.CHAT_ANONYMOUS_ENABLED = True
    make_policy("anonymous", 2)
    make_policy("ip", 3)
    s1 = Subject(ip="10.0.0.1", session_key="s1", is_anonymous=True)
    s2 = Subject(ip="10.0.0.1", session_key="s2", is_anonymous=True)
    assert [(await admit(s1, cache_key=None)).allowed for _ in range(3)] == [True, True, False]
    first, second = await admit(s2, cache_key=None), await admit(s2, cache_key=None)
    assert first.allowed and not second.allowed and second.scope == "ip"


async def test_it_refuses_anonymous_chat_unless_enabled(any_redis, settings):
    settings.CHAT_ANONYMOUS_ENABLED = False
    with pytest.raises(AuthenticationRequired):
        await admit(Subject(ip="10.0.0.1", session_key="x", is_anonymous=True), cache_key=None)


async def test_it_reloads_scripts_after_a_script_flush(any_redis, make_policy, no_default_policies):
    make_policy("user", 3)
    subject = Subject(user_id=13)
    assert (await admit(subject, cache_key=None)).allowed
    await get_redis().script_flush()  # as after a restart or failover: EVALSHA gets NOSCRIPT
    assert (await admit(subject, cache_key=None)).allowed
    assert (await admit(subject, cache_key=None)).allowed
    assert not (await admit(subject, cache_key=None)).allowed


async def test_the_token_sum_is_rebuilt_from_the_charges_when_lost(any_redis, make_policy, no_default_policies):
    make_policy("user", 100, tokens=50)
    subject = Subject(user_id=14)
    a = await admit(subject, cache_key=None)
    await settle(subject, a, prompt_tokens=20, completion_tokens=10)
    check = limiter.checks_for(subject, await limiter.policies())[0]
    assert await get_redis().get(check.keys[3]) == b"30"
    await get_redis().delete(check.keys[3])  # as if the running sum had expired on its own
    b = await admit(subject, cache_key=None)  # recounts 30 < 50
    assert b.allowed and await get_redis().get(check.keys[3]) == b"30"
    await get_redis().delete(check.keys[3])
    await settle(subject, b, prompt_tokens=15, completion_tokens=5)  # recounts, then adds: 50
    assert await get_redis().get(check.keys[3]) == b"50"
    assert not (await admit(subject, cache_key=None)).allowed
