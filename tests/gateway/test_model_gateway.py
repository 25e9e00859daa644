"""Model names that route, end to end: two scripted upstreams serving different models behind two app
processes (uvicorn) sharing Redis and PostgreSQL.

Each model name reaches its own upstream, an alias its group; a key limited to one model gets
OpenAI's 404 for the other; a group whose endpoints are down, over its limits or too small for
the prompt falls back; a spent budget is refused by the other process; the usage rows add up
exactly to the requests made; the official SDK works against it all.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import numpy as np
import openai
import pytest
from django.contrib.auth import get_user_model

from chat.gateway.models import ModelAccess, ModelUsage, RateLimitPolicy, TokenBudget
from chat.gateway.services import apikey_create, keys_purge_prefix
from inference.models import ModelEndpoint, ModelGroup
from tests.gateway.conftest import closed_port, dev_env
from tests.inference.scripted_upstream import Answer, running_in_thread
from tests.live import LiveServer

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PREFIX = f"vhmodels{uuid.uuid4().hex[:8]}"
TOKENS = ["Hello", ",", " world"]  # the scripted answer: usage 7 prompt + 3 completion tokens


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    """Two scripted upstreams (alpha-upstream, beta-upstream) and two app processes."""
    with ExitStack() as stack:
        alpha = stack.enter_context(running_in_thread(model="alpha-upstream"))
        beta = stack.enter_context(running_in_thread(model="beta-upstream"))
        for upstream in (alpha, beta):
            upstream.default = Answer(tokens=TOKENS)
        env = {
            **dev_env(),
            "REDIS_URL": os.environ["REDIS_URL"],
            "REDIS_CLUSTER": "0",
            "REDIS_KEY_PREFIX": PREFIX,
            # Each test writes its own groups, keys and budgets: the processes pick them up at once.
            "INFERENCE_REGISTRY_REFRESH_S": "0.2",
            "GATEWAY_POLICY_CACHE_S": "0.2",
            "GATEWAY_KEY_CACHE_S": "0.2",
            "CHAT_SETTINGS_TTL_S": "0",
            "GATEWAY_USAGE_FLUSH_S": "0.5",  # both processes flush usage in the background
            "INFERENCE_MAX_ATTEMPTS": "2",
            "INFERENCE_RETRY_BACKOFF_S": "0.01",
            "INFERENCE_RETRY_BACKOFF_MAX_S": "0.02",
        }
        servers = [LiveServer(env=env) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(timeout=120), servers))
        stack.callback(lambda: [s.stop() for s in servers])
        yield {"alpha": alpha, "beta": beta, "servers": servers}


@pytest.fixture
def world(stack, settings):
    """This test's model groups and endpoints (the database is emptied after each test)."""
    settings.REDIS_URL, settings.REDIS_CLUSTER, settings.REDIS_KEY_PREFIX = os.environ["REDIS_URL"], False, PREFIX

    def endpoint(name: str, group: ModelGroup, url: str, model: str) -> ModelEndpoint:
        return ModelEndpoint.objects.create(
            name=name, kind="generation", protocol="openai", base_url=url, model_name=model, group=group,
            connect_timeout_s=1, read_timeout_s=5, total_timeout_s=10,
        )  # fmt: skip

    alpha = ModelGroup.objects.create(name="alpha", aliases="a-alias, alpha-latest")
    beta = ModelGroup.objects.create(name="beta", context_window=8192)
    down = ModelGroup.objects.create(name="down", fallbacks="beta")
    endpoint("ep-alpha", alpha, stack["alpha"].base_url, "alpha-upstream")
    endpoint("ep-beta", beta, stack["beta"].base_url, "beta-upstream")
    endpoint("ep-down", down, f"http://127.0.0.1:{closed_port()}/v1", "gone")
    for upstream in (stack["alpha"], stack["beta"]):
        upstream.requests.clear()
    yield {**stack, "groups": {"alpha": alpha, "beta": beta, "down": down}}
    for family in ("ratelimit", "chat", "gateway", "apikey", "usage", "budget"):
        keys_purge_prefix(prefix=family)


def make_key(*models: ModelGroup) -> tuple[str, int]:
    user = get_user_model().objects.create_user(f"u{uuid.uuid4().hex[:8]}")
    created = apikey_create(name="models", user=user, scopes=["chat"], allowed_models=[m.pk for m in models])
    return created.full_key, created.api_key.pk


def listed(server: LiveServer, key: str) -> set[str]:
    r = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["data"]}


def ready(servers: list[LiveServer], key: str, names: set[str]) -> None:
    """Wait until every process's registry has loaded this test's groups."""
    deadline = time.monotonic() + 20
    while not all(names <= listed(s, key) for s in servers):
        assert time.monotonic() < deadline, "the app processes did not load the model groups"
        time.sleep(0.1)


def chat(server: LiveServer, key: str, model: str, content: str | None = None, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content or f"hi {uuid.uuid4().hex}"}]}
    body |= {"retrieval": False, "max_tokens": 16, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60)  # fmt: skip


def asked_of(upstream) -> list[str]:
    return [r.body["model"] for r in upstream.chat_requests]


def test_each_name_reaches_its_own_upstream_and_an_alias_its_group(world):
    a, b = world["servers"]
    key, _ = make_key()
    ready([a, b], key, {"alpha", "beta", "down"})
    for server, model, served in [(a, "alpha", "alpha"), (b, "beta", "beta"), (b, "a-alias", "alpha")]:
        r = chat(server, key, model)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == served and r.json()["choices"][0]["message"]["content"] == "Hello, world"
    # Each upstream got its own model's requests, under the upstream's model name.
    assert asked_of(world["alpha"]) == ["alpha-upstream", "alpha-upstream"]
    assert asked_of(world["beta"]) == ["beta-upstream"]
    # /v1/models/{name} resolves aliases to the group.
    r = httpx.get(f"{a.url}/v1/models/alpha-latest", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200 and r.json()["id"] == "alpha"


def test_a_key_limited_to_one_model_gets_openai_404_for_the_others(world):
    a, b = world["servers"]
    key, _ = make_key(world["groups"]["alpha"])
    ready([a, b], key, {"alpha"})
    assert listed(a, key) == {"alpha"}  # /v1/models lists only what the key may use
    assert chat(b, key, "a-alias").status_code == 200
    for model in ("beta", "no-such-model-xyz"):
        r = chat(a, key, model)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found" and r.json()["error"]["param"] == "model"
        assert r.json()["error"]["type"] == "invalid_request_error" and "does not exist" in r.json()["error"]["message"]
    assert world["beta"].chat_requests == []
    # A user's allowed models bound their keys too: the owner may not use alpha, so neither may the key.
    owner_restricted, _ = make_key()
    user = get_user_model().objects.get(api_keys__prefix=owner_restricted[:12])
    ModelAccess.objects.create(user=user, allowed_models=[world["groups"]["beta"].pk])
    deadline = time.monotonic() + 20
    while listed(a, owner_restricted) != {"beta"}:  # the process's access cache (0.2 s here)
        assert time.monotonic() < deadline, "the app process did not load the owner's allowed models"
        time.sleep(0.1)
    assert chat(a, owner_restricted, "alpha").status_code == 404
    assert chat(a, owner_restricted, "beta").status_code == 200


def test_a_group_whose_endpoints_are_down_falls_back_to_the_next_group(world):
    a, b = world["servers"]
    key, _ = make_key()
    ready([a, b], key, {"down", "beta"})
    r = chat(a, key, "down")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "beta"  # the answer says which model served it
    with httpx.stream(
        "POST",
        f"{b.url}/v1/chat/completions",
        json={"model": "down", "stream": True, "retrieval": False, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as stream:
        models = {line.split('"model":"', 1)[1].split('"', 1)[0] for line in stream.iter_lines() if '"model":"' in line}
    assert models == {"beta"}
    assert asked_of(world["beta"]) == ["beta-upstream", "beta-upstream"]
    metrics = httpx.get(f"{a.url}/metrics", timeout=30).text
    assert 'model_fallbacks_total{fallback="beta",model="down",reason="error"} 1.0' in metrics


def test_a_model_over_its_limits_or_too_small_for_the_prompt_falls_back(world):
    a, b = world["servers"]
    groups = world["groups"]
    groups["alpha"].fallbacks = "beta"
    groups["alpha"].context_window = 96
    groups["alpha"].save()
    RateLimitPolicy.objects.create(
        name="alpha per key", scope="api_key", is_default=True, requests=1, model_group=groups["alpha"]
    )
    key, _ = make_key()
    ready([a, b], key, {"alpha", "beta"})
    for server in (a, b):  # each process has loaded the policy and alpha's new settings
        probe, _ = make_key()
        deadline = time.monotonic() + 20
        while chat(server, probe, "alpha").json()["model"] != "beta":
            assert time.monotonic() < deadline, "the app processes did not load alpha's limit and fallback"
            time.sleep(0.1)
    assert chat(a, key, "alpha").json()["model"] == "alpha"
    assert chat(b, key, "alpha").json()["model"] == "beta"  # alpha's own limit: 1 request a minute
    long = "vacant house " * 150  # ~450 tokens: over alpha's 96-token window, within beta's
    assert chat(a, key, "beta", content=long).json()["model"] == "beta"
    r = chat(a, key, "alpha", content=long + uuid.uuid4().hex)
    assert r.status_code == 200 and r.json()["model"] == "beta"


def test_a_spent_budget_is_refused_by_the_other_process(world):
    a, b = world["servers"]
    key, key_id = make_key()
    probe, probe_id = make_key()
    TokenBudget.objects.create(scope="api_key", api_key_id=key_id, tokens_per_month=10)
    TokenBudget.objects.create(scope="api_key", api_key_id=probe_id, tokens_per_month=10_000)
    ready([a, b], key, {"alpha"})
    for server in (a, b):  # each process has loaded the budget table (0.2 s here): the probe key's shows
        deadline = time.monotonic() + 20
        while "X-Budget-Limit" not in chat(server, probe, "alpha").headers:
            assert time.monotonic() < deadline, "the app processes did not load the budgets"
            time.sleep(0.1)
    first = chat(a, key, "alpha")
    assert first.status_code == 200
    assert (first.headers["X-Budget-Limit"], first.headers["X-Budget-Remaining"]) == ("10", "10")
    assert first.json()["usage"]["total_tokens"] == 10  # charged after the answer: the budget is spent
    for server in (b, a):
        refused = chat(server, key, "beta")
        assert refused.status_code == 429
        body = refused.json()["error"]
        assert body["code"] == "insufficient_quota" and body["type"] == "insufficient_quota"
        assert "monthly token budget" in body["message"]
        assert refused.headers["X-Budget-Remaining"] == "0" and int(refused.headers["Retry-After"]) > 0
    assert len(world["beta"].chat_requests) == 0


def test_usage_rows_add_up_exactly_to_the_requests_made(world):
    """Both processes count in Redis and flush in the background every 0.5 s while this process
    flushes too, from three threads at once: every request is in the rows exactly once."""
    from django.db import connections

    from chat.gateway.usage import usage_flush

    def flush_in_thread() -> None:
        try:
            usage_flush()
        finally:
            connections.close_all()

    a, b = world["servers"]
    key, key_id = make_key()
    ready([a, b], key, {"alpha", "beta"})
    plan = [((a, b)[i % 2], ("alpha", "beta", "a-alias")[i % 3], i % 4 == 0) for i in range(30)]

    def run(step) -> tuple[str, int, int]:
        server, model, streamed = step
        if not streamed:
            r = chat(server, key, model)
            assert r.status_code == 200, r.text
            return r.json()["model"], r.json()["usage"]["prompt_tokens"], r.json()["usage"]["completion_tokens"]
        r = chat(server, key, model, stream=True, stream_options={"include_usage": True})
        assert r.status_code == 200
        usage = [line for line in r.text.splitlines() if '"usage"' in line][-1]
        u = json.loads(usage[6:])["usage"]
        return ("alpha" if model != "beta" else "beta"), u["prompt_tokens"], u["completion_tokens"]

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(run, plan))
        flushes = [pool.submit(flush_in_thread) for _ in range(3)]
        [f.result() for f in flushes]
    expected = {}
    for model, prompt, completion in made:
        row = expected.setdefault(model, [0, 0, 0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + prompt, row[2] + completion

    def counted() -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for u in ModelUsage.objects.filter(api_key_id=key_id):
            row = out.setdefault(u.model, [0, 0, 0])
            row[0], row[1], row[2] = row[0] + u.requests, row[1] + u.prompt_tokens, row[2] + u.completion_tokens
        return out

    deadline = time.monotonic() + 20
    while counted() != expected and time.monotonic() < deadline:
        time.sleep(0.3)
    assert counted() == expected and sum(r[0] for r in expected.values()) == 30
    usage_flush()
    time.sleep(1.2)  # more background flushes: nothing is added twice
    assert counted() == expected
    rows = ModelUsage.objects.filter(api_key_id=key_id)
    assert {r.api_key_prefix for r in rows} == {key[:12]} and all(r.errors == 0 for r in rows)


def test_the_official_sdk_lists_models_chats_on_two_models_embeds_and_raises_not_found(world, settings):
    a, b = world["servers"]
    key, _ = make_key()
    embedding = settings.INFERENCE_EMBEDDING_MODEL_NAME
    ready([a, b], key, {"alpha", "beta", embedding})
    client = openai.OpenAI(base_url=f"{a.url}/v1", api_key=key, max_retries=0, timeout=60)

    assert {"alpha", "beta", "down", embedding} <= {m.id for m in client.models.list()}
    assert client.models.retrieve("a-alias").id == "alpha"

    reply = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=8, extra_body={"retrieval": False}
    )
    assert reply.model == "alpha" and reply.choices[0].message.content == "Hello, world"
    assert reply.usage.total_tokens == 10
    chunks = list(
        client.chat.completions.create(
            model="beta",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"retrieval": False},
        )
    )
    assert {c.model for c in chunks} == {"beta"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world"
    assert chunks[-1].usage.completion_tokens == 3
    assert asked_of(world["alpha"]) == ["alpha-upstream"] and asked_of(world["beta"]) == ["beta-upstream"]

    # The SDK asks for base64 unless told otherwise; both encodings give the same floats.
    texts = ["빈집 철거 지원금은 얼마인가요?", "vacant house repair"]
    as_base64 = client.embeddings.create(model=embedding, input=texts)
    as_float = client.embeddings.create(model=embedding, input=texts, encoding_format="float")
    assert [len(d.embedding) for d in as_base64.data] == [384, 384] and as_base64.model == embedding
    # The same float32 values (JSON writes each as its shortest float32 decimal; base64 sends the bits).
    from_base64 = np.array([d.embedding for d in as_base64.data], dtype=np.float32)
    assert np.allclose(from_base64, np.array([d.embedding for d in as_float.data], dtype=np.float32), atol=1e-6)
    assert as_base64.usage.prompt_tokens == as_base64.usage.total_tokens > 0

    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model-xyz", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="alpha", input="a chat model is not an embedding model")


def test_embeddings_are_the_vectors_the_search_pipeline_uses(world, settings):
    """Passages as ingestion embeds chunks, queries as retrieval embeds questions (e5's two sides)."""
    from inference.services import embed_passages_sync, embed_query_sync, embedding_token_counts

    a, b = world["servers"]
    key, _ = make_key()
    embedding = settings.INFERENCE_EMBEDDING_MODEL_NAME
    ready([a, b], key, {embedding})
    texts = ["빈집 철거 지원금은 철거비의 최대 70%, 가구당 1,500만 원까지입니다.", "Vacant houses may be remodeled."]
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{a.url}/v1/embeddings", json={"model": embedding, "input": texts}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    passages = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert [d["index"] for d in body["data"]] == [0, 1] and body["object"] == "list"
    assert np.allclose(passages, embed_passages_sync(texts), atol=1e-6)
    assert body["usage"]["prompt_tokens"] == sum(embedding_token_counts(texts, query=False))

    q = httpx.post(
        f"{b.url}/v1/embeddings",
        json={"input": texts[0], "input_type": "query", "encoding_format": "base64"},  # no model: the embedding one
        headers=headers,
        timeout=60,
    )
    assert q.status_code == 200, q.text
    query = np.frombuffer(base64.b64decode(q.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(query, embed_query_sync(texts[0]), atol=1e-6)
    assert not np.allclose(query, passages[0], atol=1e-3)  # e5 is asymmetric: the side matters
    for bad, status in [({"input": [1, 2, 3]}, 400), ({"input": ""}, 400), ({"input": "x", "dimensions": 7}, 400),
                        ({"input": ["x"] * 1000}, 413), ({"input": "x", "encoding_format": "int8"}, 400)]:  # fmt: skip
        r = httpx.post(f"{a.url}/v1/embeddings", json=bad, headers=headers, timeout=60)
        assert r.status_code == status, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
