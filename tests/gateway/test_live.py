"""Real app processes (uvicorn) sharing Redis: one limit across replicas, revocation at once, an
answer cached through one replica a hit through the other, a session made on one used on the other,
and Redis outages answered per RATELIMIT_FAIL_MODE, never with a 500 or a hang.

The protected endpoint is the gateway's own GET /api/gateway/whoami (bearer key or session,
the subject's limits, no model call).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth import get_user_model

from chat.gateway.models import RateLimitPolicy
from chat.gateway.services import apikey_create, apikey_revoke, keys_purge_prefix
from tests.gateway.conftest import closed_port, dev_env
from tests.live import LiveServer
from tests.tools import need

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

PREFIX = f"vhlive{uuid.uuid4().hex[:8]}"


def _servers(n: int, **env: str) -> list[LiveServer]:
    common = {
        **dev_env(),
        "REDIS_KEY_PREFIX": PREFIX,
        # Policies reload quickly (each test writes its own); key rows stay cached for long,
        # so the revocation test proves the Redis revoked set, not a cache expiry.
        "GATEWAY_POLICY_CACHE_S": "0.2",
        "GATEWAY_KEY_CACHE_S": "300",
        **env,
    }
    servers = [LiveServer(env=common) for _ in range(n)]
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda s: s.start(timeout=120), servers))
    return servers


@pytest.fixture(scope="module", params=["redis", "cluster"])
def pair(request, django_db_setup, django_db_blocker):
    """Two app processes (replicas) on one Redis topology, answering with one scripted model."""
    from tests.inference.scripted_upstream import Answer, running_in_thread

    if request.param == "redis":
        env = {"REDIS_URL": os.environ["REDIS_URL"], "REDIS_CLUSTER": "0"}
    else:
        need(bool(os.environ.get("REDIS_CLUSTER_URL")), "REDIS_CLUSTER_URL unset (deploy/local/up starts it)")
        env = {"REDIS_URL": os.environ["REDIS_CLUSTER_URL"], "REDIS_CLUSTER": "1"}
    with running_in_thread(model="scripted-model") as upstream:
        upstream.default = Answer(tokens=["빈집", " 정비", " 지원"])
        servers = _servers(2, **env, VLLM_URL=upstream.base_url, VLLM_MODEL="scripted-model")
        yield request.param, env, servers, upstream
        for s in servers:
            s.stop()


@pytest.fixture
def live_settings(settings, pair):
    _, env, _, _ = pair
    settings.REDIS_KEY_PREFIX = PREFIX
    settings.REDIS_URL = env["REDIS_URL"]
    settings.REDIS_CLUSTER = env["REDIS_CLUSTER"] == "1"
    yield
    _purge()


def _purge() -> None:
    for family in ("ratelimit", "chat", "gateway", "apikey", "session", "usage", "budget"):
        keys_purge_prefix(prefix=family)


def _api_key(limit: int, scopes=("chat",)) -> str:
    RateLimitPolicy.objects.update(is_default=False)
    RateLimitPolicy.objects.create(name=f"k{uuid.uuid4().hex[:6]}", scope="api_key", is_default=True, requests=limit)
    user = get_user_model().objects.create_user(f"u{uuid.uuid4().hex[:6]}")
    return apikey_create(name="live", user=user, scopes=list(scopes)).full_key


def _get(server: LiveServer, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/gateway/whoami", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_two_processes_share_one_limit(pair, live_settings):
    _, _, (a, b), _ = pair
    key = _api_key(limit=5)
    statuses = [_get(server, key).status_code for server in (a, b, a, b, b)]
    assert statuses == [200] * 5
    # The sixth request is refused whichever process gets it.
    for server in (a, b):
        refused = _get(server, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["X-RateLimit-Limit"] == "5" and refused.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_parallel_requests_across_processes_let_exactly_the_limit_through(pair, live_settings):
    _, _, (a, b), _ = pair
    key = _api_key(limit=10)
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda i: _get((a, b)[i % 2], key).status_code, range(100)))
    assert statuses.count(200) == 10 and statuses.count(429) == 90


def test_a_revoked_key_is_refused_at_once_by_another_process(pair, live_settings):
    _, _, (a, b), _ = pair
    key = _api_key(limit=100)
    assert _get(a, key).status_code == 200
    assert _get(b, key).status_code == 200  # both processes now hold the key row in memory
    from chat.gateway.models import APIKey

    apikey_revoke(api_key=APIKey.objects.get(prefix=key[:12]))
    for server in (a, b):
        refused = _get(server, key)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_an_answer_cached_through_one_replica_is_a_hit_through_the_other(pair, live_settings):
    _, _, (a, b), upstream = pair
    key = _api_key(limit=100)
    body = {
        "model": "scripted-model",
        "messages": [{"role": "user", "content": f"빈집 철거 보조금은? {uuid.uuid4().hex[:6]}"}],
        "temperature": 0,
        "max_tokens": 16,
        "retrieval": False,
    }
    headers = {"Authorization": f"Bearer {key}"}
    calls = len(upstream.chat_requests)
    first = httpx.post(f"{a.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert first.status_code == 200, first.text
    again = httpx.post(f"{b.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert len(upstream.chat_requests) == calls + 1  # the second replica answered from the shared cache


def test_a_session_made_on_one_replica_is_used_on_the_other(pair, live_settings):
    _, _, (a, b), _ = pair
    password = uuid.uuid4().hex
    admin = get_user_model().objects.create_superuser(f"a{uuid.uuid4().hex[:6]}", password=password)
    with httpx.Client(base_url=a.url, timeout=30) as browser:
        browser.get("/admin/login/")
        answer = browser.post(
            "/admin/login/?next=/admin/",
            data={
                "username": admin.username,
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{a.url}/admin/login/"},
        )
        assert answer.status_code == 302, answer.text[:300]
        cookies = dict(browser.cookies)
    with httpx.Client(base_url=b.url, timeout=30, cookies=cookies) as other:
        landed = other.get("/admin/")
        assert landed.status_code == 200 and admin.username in landed.text


@pytest.mark.parametrize(("mode", "status"), [("open", 200), ("closed", 503)])
def test_redis_down_follows_the_fail_mode_without_500s_or_hangs(mode, status, django_db_setup, settings):
    settings.REDIS_URL = None  # this process: no Redis needed to create the key
    key = _api_key(limit=3)
    (server,) = _servers(1, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0", RATELIMIT_FAIL_MODE=mode)
    try:
        started = time.perf_counter()
        codes = [_get(server, key).status_code for _ in range(5)]
        assert time.perf_counter() - started < 10
        if mode == "open":
            assert codes == [200, 200, 200, 429, 429]  # the local limiter applies the same policy
        else:
            assert codes == [503] * 5
            r = _get(server, key)
            assert r.json()["error"]["code"] == "service_unavailable" and r.headers["Retry-After"]
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        assert health.status_code == 200
    finally:
        server.stop()


def test_a_cached_answer_is_served_without_calling_the_model(django_db_setup, settings):
    """End to end through the chat pipeline: the second identical request never reaches the model,
    and a streaming request gets the cached answer replayed as a stream."""
    from tests.inference.scripted_upstream import Answer, running_in_thread

    settings.REDIS_URL = os.environ["REDIS_URL"]
    settings.REDIS_CLUSTER = False
    settings.REDIS_KEY_PREFIX = PREFIX
    key = _api_key(limit=100)
    with running_in_thread(model="scripted-model") as upstream:
        upstream.default = Answer(tokens=["빈집", " 정비", " 지원"])
        (server,) = _servers(
            1,
            REDIS_URL=os.environ["REDIS_URL"],
            REDIS_CLUSTER="0",
            VLLM_URL=upstream.base_url,
            VLLM_MODEL="scripted-model",
        )
        try:
            body = {
                "model": "scripted-model",
                "messages": [{"role": "user", "content": "빈집 정비 지원은?"}],
                "temperature": 0,
                "max_tokens": 16,
                "retrieval": False,
            }
            headers = {"Authorization": f"Bearer {key}"}
            first = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
            assert first.status_code == 200, first.text
            answer = first.json()["choices"][0]["message"]["content"]
            assert answer and len(upstream.chat_requests) == 1

            second = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
            assert second.status_code == 200 and second.json()["choices"][0]["message"]["content"] == answer

            streamed = ""
            with httpx.stream(
                "POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, headers=headers, timeout=60
            ) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        for choice in json.loads(line[6:]).get("choices", []):
                            streamed += (choice.get("delta") or {}).get("content") or ""
            assert streamed == answer
            assert len(upstream.chat_requests) == 1  # the model was called once for three answers
        finally:
            server.stop()
            _purge()


def _sse(response: httpx.Response) -> list[dict | str]:
    """A stream's events in order (``[DONE]`` as the string), with the per-answer id and time left out."""
    events: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            if line == "data: [DONE]":
                events.append("[DONE]")
                continue
            event = json.loads(line[6:])
            assert event.pop("id").startswith("chatcmpl-") and isinstance(event.pop("created"), int)
            events.append(event)
    return events


def _text(events: list[dict | str]) -> list[str]:
    """The non-empty content deltas: the chunks a client sees."""
    pieces = []
    for event in events:
        for choice in event.get("choices", []) if isinstance(event, dict) else []:
            if (choice.get("delta") or {}).get("content"):
                pieces.append(choice["delta"]["content"])
    return pieces


def test_a_cached_stream_replays_in_its_original_chunks(django_db_setup, settings):
    """A streamed answer replayed from the cache is the same events (20 chunks, the same text, shape and
    headers) as the model's; an entry stored in the first format, without its chunks, still replays."""
    from chat.gateway import cache
    from config.redis import sync_redis
    from knowledge.services.generation import generation_key
    from tests.inference.scripted_upstream import Answer, running_in_thread

    settings.REDIS_URL = os.environ["REDIS_URL"]
    settings.REDIS_CLUSTER = False
    settings.REDIS_KEY_PREFIX = PREFIX
    key = _api_key(limit=100)
    with sync_redis() as r:  # an index generation exists (else the first answer only starts one, uncached)
        r.set(generation_key(), 1, nx=True)
    tokens = [f"조각{i} " if i % 2 else f"piece {i}, " for i in range(20)]
    with running_in_thread(model="scripted-model") as upstream:
        upstream.default = Answer(tokens=tokens)
        (server,) = _servers(
            1,
            REDIS_URL=os.environ["REDIS_URL"],
            REDIS_CLUSTER="0",
            VLLM_URL=upstream.base_url,
            VLLM_MODEL="scripted-model",
        )
        try:
            body = {
                "model": "scripted-model",
                "messages": [{"role": "user", "content": f"빈집 정비 지원은? {uuid.uuid4().hex}"}],
                "temperature": 0,
                "max_tokens": 32,
                "retrieval": False,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            headers = {"Authorization": f"Bearer {key}"}

            def stream() -> tuple[httpx.Headers, list[dict | str]]:
                with httpx.stream(
                    "POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60
                ) as response:
                    assert response.status_code == 200
                    return response.headers, _sse(response)

            first_headers, first = stream()
            assert _text(first) == tokens and len(upstream.chat_requests) == 1
            hit_headers, hit = stream()
            assert len(upstream.chat_requests) == 1  # the replay never reached the model
            assert _text(hit) == tokens  # the same 20 chunks, not fixed-size pieces
            assert hit == first  # every event the same: role chunk, content chunks, final chunk, usage, [DONE]
            same = ("content-type", "cache-control", "x-accel-buffering", "transfer-encoding")
            assert {h: hit_headers.get(h) for h in same} == {h: first_headers.get(h) for h in same}
            assert {h for h in hit_headers if h.startswith("x-")} == {h for h in first_headers if h.startswith("x-")}

            # An entry in the first format (no "v", no chunks) replays as before: fixed-size pieces.
            with sync_redis() as r:
                (entry,) = [k for k in r.scan_iter(match=cache.prefix() + "*") if r.type(k) == b"string"]
                data = json.loads(r.get(entry))
                assert data["v"] == 2 and data["chunks"] == [len(t) for t in tokens]
                del data["v"], data["chunks"]
                r.set(entry, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), keepttl=True)
            _, old = stream()
            text = "".join(tokens)
            assert _text(old) == [text[i : i + 24] for i in range(0, len(text), 24)]
            assert len(upstream.chat_requests) == 1
        finally:
            server.stop()
            _purge()
