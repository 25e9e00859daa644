"""The response cache: keys, hits without a model call, expiry, purge (Redis and Cluster)."""

from __future__ import annotations

import asyncio

import pytest

from chat.gateway import cache, selectors
from chat.gateway.services import (
    CachedAnswer,
    Subject,
    admit,
    cache_flush,
    cache_key_for,
    cache_put,
    cache_ttl,
    cache_ttl_set,
    keys_purge_prefix,
    settle,
)
from config.redis import get_redis
from monitoring.metrics import CACHE_REQUESTS
from tests.gateway.conftest import in_thread

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "빈집 철거 보조금은?"}]


ALICE = Subject(user_id=1)


def _key(subject=ALICE, **overrides):
    args = {
        "subject": subject,
        "model": "smollm2",
        "messages": MESSAGES,
        "context_ids": [3, 1, 2],
        "params": {"temperature": 0, "max_tokens": 64},
    }
    args.update(overrides)
    return cache_key_for(**args)


@pytest.mark.fast
def test_it_keys_on_model_prompt_context_and_parameters(settings):
    settings.REDIS_KEY_PREFIX = "vh"
    base = _key()
    assert base.startswith("vh:chat:response:") and len(base.rsplit(":", 1)[1]) == 64
    assert _key() == base
    assert _key(subject=Subject(user_id=2)) == base  # shared across users: public context
    assert _key(model="other") != base
    assert _key(context_ids=[1, 2, 3]) != base  # the prompt order is part of the prompt
    assert _key(params={"temperature": 0, "max_tokens": 65}) != base
    assert _key(messages=[*MESSAGES[:1], {"role": "user", "content": "다른 질문"}]) != base
    # Transport-only parameters do not split the cache: a streamed and a plain request share it.
    assert _key(params={"temperature": 0, "max_tokens": 64, "stream": True, "user": "x"}) == base


@pytest.mark.fast
def test_it_never_shares_private_context_across_users(settings):
    mine = _key(private_context=True)
    assert mine != _key() and mine == _key(private_context=True)
    assert _key(subject=Subject(user_id=2), private_context=True) != mine
    assert _key(subject=Subject(ip="1.2.3.4", is_anonymous=True), private_context=True) is None


@pytest.mark.fast
def test_it_caches_only_deterministic_requests(settings):
    settings.RESPONSE_CACHE_MAX_TEMPERATURE = 0.0
    settings.RESPONSE_CACHE_DEFAULT_TEMPERATURE = 0.0
    assert _key(params={"temperature": 0.7}) is None
    assert _key(params={}) is not None  # unset: generated at the default temperature 0
    settings.RESPONSE_CACHE_DEFAULT_TEMPERATURE = 0.7
    assert _key(params={}) is None
    settings.RESPONSE_CACHE_MAX_TEMPERATURE = 1.0
    assert _key(params={"temperature": 0.7}) is not None
    settings.RESPONSE_CACHE_ENABLED = False
    assert _key() is None


def _hits() -> float:
    return CACHE_REQUESTS.labels(result="hit")._value.get()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_a_cached_answer_comes_back_from_admit(any_redis, make_policy, no_default_policies):
    make_policy("user", 100)
    subject = Subject(user_id=5)
    key = _key(subject=subject)
    miss = await admit(subject, cache_key=key)
    assert miss.allowed and miss.cached is None
    answer = CachedAnswer(
        content="철거 보조금은 최대 ...", citations=[{"n": 1, "title": "조례"}], model="smollm2", completion_tokens=9
    )
    await cache_put(key, answer)
    hits_before = _hits()
    hit = await admit(Subject(user_id=6), cache_key=key)  # another user, same public question
    assert hit.allowed and hit.cached == answer
    assert _hits() == hits_before + 1
    await settle(Subject(user_id=6), hit, prompt_tokens=0, completion_tokens=0)  # counts the shared hit
    stats = in_thread(selectors.cache_stats)
    assert stats.lookups == 2 and stats.hits == 1 and stats.hit_rate == 0.5 and stats.entries == 1


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_a_refused_request_gets_no_cached_answer(any_redis, make_policy, no_default_policies):
    make_policy("user", 1)
    subject = Subject(user_id=5)
    key = _key(subject=subject)
    await cache_put(key, CachedAnswer(content="x"))
    assert (await admit(subject, cache_key=key)).cached is not None
    refused = await admit(subject, cache_key=key)
    assert not refused.allowed and refused.cached is None


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_an_expired_entry_is_gone(any_redis):
    key = _key()
    await cache_put(key, CachedAnswer(content="short-lived"), ttl=1)
    assert 0 < await get_redis().pttl(key) <= 1000
    assert (await admit(Subject(user_id=1), cache_key=key)).cached is not None
    await asyncio.sleep(1.2)
    assert (await admit(Subject(user_id=1), cache_key=key)).cached is None
    assert await get_redis().exists(key) == 0


@pytest.mark.services
async def test_it_uses_the_admin_ttl_override(any_redis, settings):
    assert await cache_ttl() == settings.RESPONSE_CACHE_TTL
    in_thread(cache_ttl_set, seconds=7200)
    assert await cache_ttl() == 7200
    key = _key()
    await cache_put(key, CachedAnswer(content="a"))
    assert 7190 < await get_redis().ttl(key) <= 7200
    in_thread(cache_ttl_set, seconds=None)
    assert await cache_ttl() == settings.RESPONSE_CACHE_TTL


@pytest.mark.services
async def test_it_purges_by_prefix_and_flushes_only_its_namespace(any_redis):
    r = get_redis()
    keys = [_key(params={"temperature": 0, "max_tokens": n}) for n in range(1, 1201)]
    for i in range(0, len(keys), 200):
        await asyncio.gather(*(cache_put(k, CachedAnswer(content="x")) for k in keys[i : i + 200]))
    other = cache.stats_key()
    await r.hincrby(other, "lookups", 1)
    session = f"{settings_prefix()}:session:1:abc"
    await r.set(session, "keep")
    one = keys[0].rsplit(":", 1)[1]
    assert (in_thread(selectors.cache_entry, one)).data["content"] == "x"

    removed = in_thread(keys_purge_prefix, prefix="chat:response:" + one[:1])
    assert removed == sum(1 for k in keys if k.rsplit(":", 1)[1].startswith(one[:1]))
    assert await r.exists(keys[0]) == 0

    assert in_thread(cache_flush) == len(keys) - removed
    assert sum([await r.exists(k) for k in keys]) == 0
    assert await r.exists(other) == 1 and await r.get(session) == b"keep"
    with pytest.raises(ValueError):
        in_thread(keys_purge_prefix, prefix="  ")


def settings_prefix() -> str:
    from django.conf import settings

    return settings.REDIS_KEY_PREFIX


@pytest.mark.services
async def test_the_keyspace_summary_counts_by_prefix(any_redis):
    await cache_put(_key(), CachedAnswer(content="x" * 500))
    await get_redis().set(f"{settings_prefix()}:session:1:abc", "y")
    families, exact = in_thread(selectors.keyspace)
    by_name = {f.name: f for f in families}
    assert exact and by_name["chat:response"].keys == 1 and by_name["chat:response"].approx_bytes > 500
    assert by_name["session"].keys == 1
