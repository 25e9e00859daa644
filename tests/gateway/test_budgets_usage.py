"""Model limits, monthly token budgets and usage accounting in admit/settle, on a real Redis and a
real Redis Cluster, with the usage flushed into PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model

from chat.errors import BudgetExceeded
from chat.gateway import budgets, limiter, usage
from chat.gateway.models import ModelUsage, RateLimitPolicy, TokenBudget
from chat.gateway.services import CachedAnswer, Subject, admit, cache_put, settle
from chat.renderers.openai import openai_error_body
from config.redis import get_redis
from inference.config import GroupConfig
from inference.models import ModelGroup
from tests.gateway.conftest import in_thread

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def groups(transactional_db):
    def make() -> tuple[GroupConfig, GroupConfig]:
        a = ModelGroup.objects.create(name=f"a-{uuid.uuid4().hex[:6]}")
        b = ModelGroup.objects.create(name=f"b-{uuid.uuid4().hex[:6]}")
        return GroupConfig.from_model(a), GroupConfig.from_model(b)

    return in_thread(make)


def budget(**fields) -> TokenBudget:
    row = in_thread(lambda: TokenBudget.objects.create(**fields))
    budgets.invalidate_budgets()
    return row


def user() -> int:
    return in_thread(lambda: get_user_model().objects.create_user(f"u{uuid.uuid4().hex[:8]}").pk)


async def test_a_models_policy_counts_its_requests_apart_and_says_so(
    any_redis, make_policy, no_default_policies, groups
):
    a, b = groups
    make_policy("user", 100)
    in_thread(
        lambda: RateLimitPolicy.objects.create(
            name="a per user", scope="user", is_default=True, requests=1, model_group_id=a.id
        )
    )
    limiter.invalidate_policies()
    subject = Subject(user_id=5)
    assert (await admit(subject, cache_key=None, model=a)).allowed
    refused = await admit(subject, cache_key=None, model=a)
    assert not refused.allowed and refused.model_scoped and refused.scope == "user"
    # The model's refusal was undone everywhere: the subject's own window counts one request only.
    assert (await admit(subject, cache_key=None, model=b)).allowed
    assert (await admit(subject, cache_key=None)).allowed
    general = await admit(subject, cache_key=None)
    assert general.headers()["X-RateLimit-Remaining"] == "96"


async def test_a_spent_budget_is_refused_with_its_headers_and_a_models_budget_apart(any_redis, groups):
    a, b = groups
    uid = user()
    budget(scope="user", user_id=uid, tokens_per_month=30)
    budget(scope="user", user_id=uid, model_group_id=a.id, tokens_per_month=10)
    subject = Subject(user_id=uid)
    first = await admit(subject, cache_key=None, model=a)
    h = first.headers()
    assert (h["X-Budget-Limit"], h["X-Budget-Remaining"]) == ("10", "10") and int(h["X-Budget-Reset"]) > 0
    await settle(subject, first, prompt_tokens=6, completion_tokens=4)
    spent = await admit(subject, cache_key=None, model=a)
    assert not spent.allowed and spent.reason == "budget" and spent.model_scoped and spent.budget_model == a.name
    err = spent.as_error()
    assert isinstance(err, BudgetExceeded) and err.http_status == 429 and err.code == "budget_exceeded"
    assert f"model {a.name}" in err.message and err.headers["X-Budget-Remaining"] == "0"
    assert openai_error_body(err)["error"]["code"] == "insufficient_quota"
    # Model b has no budget of its own: the all-models one (30, 10 used) applies.
    other = await admit(subject, cache_key=None, model=b)
    assert other.allowed and other.headers()["X-Budget-Remaining"] == "20"
    await settle(subject, other, prompt_tokens=15, completion_tokens=5)
    final = await admit(subject, cache_key=None, model=b)
    assert not final.allowed and not final.model_scoped  # the caller's own budget: no fallback helps
    month = budgets.month_now()[0]
    client = get_redis()
    assert int(await client.get(budgets.counter_key(f"user:{uid}", month, None))) == 30
    assert int(await client.get(budgets.counter_key(f"user:{uid}", month, a.id))) == 10
    if any_redis == "cluster":  # the subject's counters share its usage hash's slot (one script charges both)
        slots = {client.keyslot(budgets.counter_key(f"user:{uid}", month, m)) for m in (None, a.id)}
        assert slots == {client.keyslot(usage.live_key(usage.shard_of(f"user:{uid}")))}


async def test_a_default_budget_applies_to_every_key_and_a_keys_own_row_wins(any_redis):
    from chat.gateway.services import apikey_create

    budget(scope="api_key", tokens_per_month=5)
    owner = in_thread(lambda: get_user_model().objects.get(pk=user()))
    key_id = in_thread(lambda: apikey_create(name="b", user=owner, scopes=["chat"]).api_key.pk)
    assert (await admit(Subject(user_id=owner.pk, api_key_id=key_id), cache_key=None)).headers()[
        "X-Budget-Limit"
    ] == "5"
    budget(scope="api_key", api_key_id=key_id, tokens_per_month=500)
    assert (await admit(Subject(user_id=owner.pk, api_key_id=key_id), cache_key=None)).headers()[
        "X-Budget-Limit"
    ] == "500"
    # Users have no default budget here; a session request carries no budget headers.
    assert "X-Budget-Limit" not in (await admit(Subject(user_id=owner.pk), cache_key=None)).headers()


async def test_settle_counts_usage_and_the_flush_adds_it_exactly_once(any_redis, groups):
    a, b = groups
    subject = Subject(user_id=77, api_key_id=88)
    for model, prompt, completion, error in [(a, 10, 5, False), (a, 3, 0, True), (b, 7, 2, False)]:
        admission = await admit(subject, cache_key=None, model=model)
        admission.usage.error, admission.usage.latency_ms = error, 120
        await settle(subject, admission, prompt_tokens=prompt, completion_tokens=completion)
    # A cache hit counts as a request (and as cached), with no model tokens.
    key = f"vh-test-{uuid.uuid4().hex}"
    await cache_put(key, CachedAnswer(content="x", model=a.name, prompt_tokens=9, completion_tokens=9))
    hit = await admit(subject, cache_key=key, model=a)
    assert hit.cached is not None
    await settle(subject, hit, prompt_tokens=9, completion_tokens=9)

    reports = [in_thread(usage.usage_flush) for _ in range(2)]
    assert reports[0].requests == 4 and reports[1].requests == 0
    rows = {r.model: r for r in in_thread(lambda: list(ModelUsage.objects.filter(api_key_id=88)))}
    assert set(rows) == {a.name, b.name}
    ra, rb = rows[a.name], rows[b.name]
    assert (ra.requests, ra.cached, ra.errors, ra.prompt_tokens, ra.completion_tokens) == (3, 1, 1, 13, 5)
    assert (rb.requests, rb.errors, rb.prompt_tokens, rb.completion_tokens) == (1, 0, 7, 2)
    assert ra.user_id == 77 and ra.latency_ms >= 240 and ra.day == usage.date.fromisoformat(usage.day_now())


async def test_a_batch_left_pending_by_a_dead_flusher_is_applied_once(any_redis):
    """A flusher that renamed a shard and died before its commit: the next flush applies the batch."""
    from chat.gateway.scripts import FLUSH_BEGIN_SCRIPT

    subject = Subject(user_id=3)
    model = GroupConfig("m", id=1)
    for _ in range(5):
        await settle(subject, await admit(subject, cache_key=None, model=model), prompt_tokens=2, completion_tokens=1)
    client = get_redis()
    for shard in range(usage.SHARDS):  # the dead flusher's first step, on every shard
        live, batch = usage.live_key(shard), uuid.uuid4().hex
        await client.eval(FLUSH_BEGIN_SCRIPT, 3, live, usage.batch_key(shard, batch), usage.pending_key(shard), batch)
    report = in_thread(usage.usage_flush)
    assert report.requests == 5
    rows = in_thread(lambda: list(ModelUsage.objects.filter(user_id=3, api_key_id=0)))
    assert sum(r.requests for r in rows) == 5 and sum(r.prompt_tokens for r in rows) == 10
    assert [await client.scard(usage.pending_key(s)) for s in range(usage.SHARDS)] == [0] * usage.SHARDS


async def test_with_redis_down_usage_is_counted_in_memory_and_flushed(redis_down, settings):
    subject = Subject(user_id=11)
    admission = await admit(subject, cache_key=None, model=GroupConfig("m", id=1))
    await settle(subject, admission, prompt_tokens=4, completion_tokens=6)
    settings.REDIS_URL = None  # the flush writes the process's counts without Redis
    report = in_thread(usage.usage_flush)
    assert report.requests == 1
    row = in_thread(lambda: ModelUsage.objects.get(user_id=11))
    assert (row.model, row.requests, row.prompt_tokens, row.completion_tokens) == ("m", 1, 4, 6)
    # A request that names no model (whoami) is not model usage.
    await settle(subject, await admit(subject, cache_key=None), prompt_tokens=1, completion_tokens=1)
    assert in_thread(usage.usage_flush).requests == 0
