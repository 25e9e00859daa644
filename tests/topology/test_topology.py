"""The scaled-out platform (tests/topology/rig.py) under faults while traffic runs.

nginx (the shipped config) in front of two app replicas on the Redis Cluster and the
three-node Elasticsearch cluster, with two upstreams. Each test prints what it saw: requests,
outcomes by kind, and how long recovery took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
import websockets
from django.conf import settings
from django.contrib.auth import get_user_model

from chat.gateway.models import RateLimitPolicy
from chat.gateway.services import apikey_create
from tests import live
from tests.inference.scripted_upstream import Answer
from tests.live import REPO
from tests.tools import need
from tests.topology.rig import MODEL, Topology

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SLOT_TTL_S = 6  # the topology's RATELIMIT_SLOT_TTL_S (production: 30)


@pytest.fixture(scope="module")
def topology(django_db_setup, django_db_blocker):
    redis_url, es_urls = os.environ.get("REDIS_CLUSTER_URL"), os.environ.get("ES_CLUSTER_URLS")
    need(bool(redis_url), "REDIS_CLUSTER_URL unset (deploy/local/up redis-cluster)")
    need(bool(es_urls), "ES_CLUSTER_URLS unset (deploy/local/up es-cluster)")
    subprocess.run([str(REPO / "deploy/local/up"), "redis-cluster", "es-cluster"], check=True, timeout=300)
    topo = Topology(
        database_url=live.test_database_url(),
        redis_url=redis_url,
        es_urls=es_urls.split(","),
        secret_key=settings.SECRET_KEY,
    )
    with django_db_blocker.unblock():
        topo.start()
    yield topo
    topo.close()


def _new_key(scopes: tuple[str, ...] = ("chat",), *, superuser: bool = False) -> str:
    user = get_user_model().objects.create_user(f"u{uuid.uuid4().hex[:8]}", is_staff=superuser, is_superuser=superuser)
    return apikey_create(name="topology", user=user, scopes=list(scopes)).full_key


def _key_with_limit(topo: Topology, limit: int, scopes: tuple[str, ...] = ("chat",), *, superuser: bool = False) -> str:
    """A fresh key under a default policy of ``limit`` requests that every replica has loaded
    (a probe key shows each replica's policy table)."""
    RateLimitPolicy.objects.update(is_default=False)
    RateLimitPolicy.objects.create(name=f"t{uuid.uuid4().hex[:6]}", scope="api_key", is_default=True, requests=limit)
    _wait_for_policy(topo, _bearer(_new_key()), limit)
    return _new_key(scopes, superuser=superuser)


def _wait_for_policy(topo: Topology, headers: dict[str, str], limit: int) -> None:
    """Until every replica shows ``limit`` to this caller (each reloads its policy table itself)."""
    for server in topo.servers:
        deadline = time.monotonic() + 15
        while True:
            seen = httpx.get(f"{server.url}/api/gateway/whoami", headers=headers, timeout=10)
            if seen.headers.get("X-RateLimit-Limit") == str(limit):
                break
            assert time.monotonic() < deadline, f"replica {server.port} did not load the policy"
            time.sleep(0.2)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ask(topo: Topology, key: str, content: str, *, timeout: float = 15) -> tuple[int, float, dict]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 32,
        "temperature": 0,
        "retrieval": False,
    }
    started = time.monotonic()
    try:
        r = httpx.post(f"{topo.url}/v1/chat/completions", json=body, headers=_bearer(key), timeout=timeout)
    except httpx.HTTPError as exc:
        return -1, time.monotonic() - started, {"error": type(exc).__name__}
    return r.status_code, time.monotonic() - started, dict(r.headers)


# --- limits and cache across replicas ------------------------------------------------------


def test_one_limit_and_one_cache_across_the_replicas_behind_nginx(topology):
    key = _key_with_limit(topology, 10)
    with ThreadPoolExecutor(32) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.get(f"{topology.url}/api/gateway/whoami", headers=_bearer(key), timeout=30), range(100)
            )
        )
    counts = Counter(r.status_code for r in statuses)
    print(f"\n100 parallel requests through nginx on a limit of 10: {dict(counts)}")
    assert counts == {200: 10, 429: 90}

    cached_key = _key_with_limit(topology, 1000)
    question = f"빈집 철거 보조금은 얼마인가요? {uuid.uuid4().hex[:6]}"
    calls = sum(len(u.chat_requests) for u in topology.upstreams.servers)
    answers = [_ask(topology, cached_key, question) for _ in range(6)]  # least_conn spreads them over both replicas
    assert [a[0] for a in answers] == [200] * 6
    assert sum(len(u.chat_requests) for u in topology.upstreams.servers) == calls + 1


# --- a replica dies under a websocket conversation -------------------------------------------


async def _connect(topo: Topology, cookie: str, *, within_s: float = 20):
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await websockets.connect(
                f"{topo.ws_url}/ws/chat/", additional_headers={"Cookie": cookie}, origin=topo.url, open_timeout=5
            )
        except (OSError, websockets.InvalidStatus, websockets.InvalidHandshake, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _recv(ws, timeout: float = 20) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _answer(ws, content: str, conversation_id: str | None = None) -> dict:
    frame: dict = {"type": "message", "content": content}
    if conversation_id:
        frame["conversation_id"] = conversation_id
    await ws.send(json.dumps(frame))
    text = []
    while True:
        got = await _recv(ws)
        if got["type"] == "token":
            text.append(got["text"])
        elif got["type"] in ("end", "error"):
            return {**got, "text": "".join(text)}


async def _conversation_survives(topo: Topology, cookie: str) -> dict:
    seen: dict = {}
    ws = await _connect(topo, cookie)
    model = topo.upstreams.servers[0]
    deadline = time.monotonic() + 15
    while True:  # until the replicas answer with the model (ChatSettings reloaded: retrieval off)
        calls = len(model.chat_requests)
        first = await _answer(ws, "빈집 정비 지원은 어디에 문의하나요?")
        assert first["type"] == "end" and first["status"] == "complete", first
        if len(model.chat_requests) > calls:
            break
        assert time.monotonic() < deadline, "the replicas kept answering without the model"
        await asyncio.sleep(0.3)
    cid = str(first["conversation_id"])
    # The next answer streams slowly; the replica holding the socket dies in the middle of it.
    slow = [f" 토큰{i}" for i in range(40)]
    topo.upstreams.servers[0].script(Answer(tokens=slow, delay_s=0.15))
    await ws.send(json.dumps({"type": "message", "content": "보조금 신청 서류는?", "conversation_id": cid}))
    tokens = 0
    started = time.monotonic()
    while tokens < 12 or time.monotonic() - started < 2.0:  # past a checkpoint (CHAT_CHECKPOINT_S=1)
        got = await _recv(ws)
        assert got["type"] in ("start", "sources", "token", "heartbeat"), got
        tokens += got["type"] == "token"
    holder = next(i for i in range(len(topo.servers)) if topo.websockets_on(i) == 1)
    topo.kill_replica(holder)
    killed_at = time.monotonic()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    except websockets.ConnectionClosed:
        seen["closed_after_s"] = time.monotonic() - killed_at
    seen["holder"] = holder
    ws2 = await _connect(topo, cookie)
    seen["reconnected_after_s"] = time.monotonic() - killed_at
    # The dead replica's concurrency slot is a lease (RATELIMIT_SLOT_TTL_S): until it lapses the
    # visitor's next question is refused as rate_limited with a Retry-After, never a 5xx.
    asked, refusals = time.monotonic(), 0
    while True:
        third = await _answer(ws2, "철거 후 세금은 어떻게 되나요?", cid)
        if third["type"] != "error" or third.get("code") != "rate_limited":
            break
        refusals += 1
        assert time.monotonic() - asked < SLOT_TTL_S + 5, "the dead replica's slot outlived its lease"
        await asyncio.sleep(third.get("retry_after") or 1)
    seen["after_reconnect"], seen["refusals"] = third, refusals
    seen["answered_after_s"] = time.monotonic() - killed_at
    await ws2.close()
    seen["cid"] = cid
    seen["tokens_before_kill"] = tokens
    return seen


def test_a_websocket_conversation_survives_the_loss_of_its_replica(topology):
    from chat.models import ChatSettings

    # Answers from the model alone: nothing is indexed in this topology's search.
    ChatSettings.objects.update_or_create(pk=1, defaults={"retrieval_enabled": False})
    page = httpx.get(f"{topology.url}/", timeout=30)
    assert page.status_code == 200
    cookie = f"sessionid={page.cookies['sessionid']}"
    # One answer at a time per anonymous visitor, as the shipped default policy has it. Every other
    # default off too (the migrations' seeded ones are there when this test runs first).
    RateLimitPolicy.objects.update(is_default=False)
    RateLimitPolicy.objects.create(
        name="anon-1", scope="anonymous", is_default=True, requests=777, concurrent_requests=1
    )
    _wait_for_policy(topology, {"Cookie": cookie}, 777)
    seen = asyncio.run(_conversation_survives(topology, cookie))
    try:
        after = seen["after_reconnect"]
        # The survivor sweeps rows whose writer missed three checkpoint rounds (3 s here) every 1.5 s.
        deadline = time.monotonic() + 10
        while True:
            messages = httpx.get(
                f"{topology.url}/api/conversations/{seen['cid']}/messages/", headers={"Cookie": cookie}, timeout=30
            ).json()
            rows = messages["results"] if isinstance(messages, dict) else messages
            answers = [m for m in rows if m["role"] == "assistant"]
            if len(answers) < 2 or answers[1]["status"] != "streaming" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(
            f"\nreplica {seen['holder']} killed after {seen['tokens_before_kill']} tokens: socket closed in "
            f"{seen['closed_after_s']:.2f} s, reconnected through nginx in {seen['reconnected_after_s']:.2f} s; "
            f"next question refused {seen['refusals']}x (rate_limited, the dead replica's slot lease) and answered "
            f"{seen['answered_after_s']:.1f} s after the kill: {after['type']} {after.get('status')}; stored answers "
            f"{[(a['status'], len(a['content'])) for a in answers]}"
        )
        assert after["type"] == "end" and after["status"] == "complete", after
        assert answers[0]["status"] == "complete" and answers[-1]["status"] == "complete"
        interrupted = answers[1]
        # Stored as partial with its checkpointed text: the dead replica's row stopped showing signs
        # of life, and the survivor's sweep marked it (chat.services.answer_recovery).
        assert interrupted["status"] == "partial" and interrupted["content"].startswith(" 토큰0")
    finally:
        topology.restart_replica(seen["holder"])


# --- a Redis master dies under traffic -----------------------------------------------------------


def _cluster_node_for(redis_url: str, hash_tag: str) -> int:
    client = redis.RedisCluster.from_url(redis_url)
    try:
        slot = client.keyslot(hash_tag)
        return int(client.nodes_manager.get_node_from_slot(slot).port)
    finally:
        client.close()


def _traffic(topo: Topology, key: str, seconds: float, out: list) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status, elapsed, _ = _ask(topo, key, f"빈집 질문 {uuid.uuid4().hex[:8]}")
        out.append((time.monotonic() - started, status, elapsed))
        time.sleep(0.1)


def _recovered_after(samples: list, fault_at: float) -> float | None:
    """Seconds from the fault to the first request after which every request was answered 200."""
    bad = [t for t, status, _ in samples if status != 200 and t >= fault_at]
    return (max(bad) - fault_at) if bad else 0.0


def test_a_redis_master_killed_under_traffic_fails_over(topology):
    key = _key_with_limit(topology, 100_000)
    from chat.gateway.models import APIKey

    subject = f"key:{APIKey.objects.get(prefix=key[:12]).pk}"
    port = _cluster_node_for(topology.redis_url, "{" + subject + "}")  # the master of this key's limit counters
    samples: list = []
    traffic = threading.Thread(target=_traffic, args=(topology, key, 30, samples))
    traffic.start()
    time.sleep(3)
    pid = int((REPO / ".local" / "run" / f"redis-cluster-{port}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    traffic.join()
    subprocess.run([str(REPO / "deploy/local/up"), "redis-cluster"], check=True, timeout=120)  # rejoins as a replica
    counts = Counter(status for _, status, _ in samples)
    slowest = max(elapsed for _, _, elapsed in samples)
    recovered = _recovered_after(samples, 3)
    print(
        f"\nRedis master :{port} killed at 3 s: {len(samples)} requests, {dict(counts)}, slowest {slowest:.2f} s, "
        f"every request 200 again {recovered:.1f} s after the kill (fail mode {settings.RATELIMIT_FAIL_MODE})"
    )
    assert not counts.keys() - {200, 503}, counts  # no 500, no hang (timeouts show as -1)
    assert slowest < 10
    assert all(status == 200 for t, status, _ in samples if t > 3 + 20), "not recovered 20 s after the kill"


# --- an upstream dies mid-stream -----------------------------------------------------------------


def test_an_upstream_killed_mid_stream_sends_new_answers_to_the_other(topology):
    key = _key_with_limit(topology, 100_000)
    topology.add_second_upstream(key)
    slow = Answer(tokens=[f" t{i}" for i in range(60)], delay_s=0.1)
    for upstream in topology.upstreams.servers:
        upstream.script(slow)  # whichever of the two the request goes to
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "느린 답"}],
        "stream": True,
        "max_tokens": 64,
        "retrieval": False,
    }
    events, ended = [], {}
    calls = [len(u.chat_requests) for u in topology.upstreams.servers]

    def stream() -> None:
        try:
            with httpx.stream(
                "POST", f"{topology.url}/v1/chat/completions", json=body, headers=_bearer(key), timeout=30
            ) as r:
                ended["status"] = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
        except httpx.HTTPError as exc:
            ended["error"] = type(exc).__name__

    reader = threading.Thread(target=stream)
    reader.start()
    deadline = time.monotonic() + 15
    while len(events) < 5:
        assert time.monotonic() < deadline, f"the stream did not start: {ended}"
        time.sleep(0.05)
    serving = next(i for i, u in enumerate(topology.upstreams.servers) if len(u.chat_requests) > calls[i])
    survivor = topology.upstreams.servers[1 - serving]
    survivor._script.clear()  # its scripted slow answer was not used
    topology.upstreams.kill(serving)
    killed_at = time.monotonic()
    reader.join(30)
    try:
        before = len(survivor.chat_requests)
        after = [_ask(topology, key, f"다음 질문 {i}") for i in range(5)]
        recovered = time.monotonic() - killed_at
        last = events[-1] if events else ""
        print(
            f"\nupstream {serving + 1} killed after {len(events)} stream events: the stream ended with "
            f"{'[DONE]' if last == '[DONE]' else last[:120]!r}; next 5 answers {[a[0] for a in after]} "
            f"({[round(a[1], 2) for a in after]} s), {len(survivor.chat_requests) - before} of them by the other; "
            f"{recovered:.1f} s from the kill to the fifth answer"
        )
        assert ended.get("status") == 200 and "error" in last  # the interrupted stream says so
        assert [a[0] for a in after] == [200] * 5
        assert len(survivor.chat_requests) - before == 5
    finally:
        topology.upstreams.revive(serving)


# --- PostgreSQL restarts under traffic -------------------------------------------------------------


# --- an Elasticsearch node dies under traffic ----------------------------------------------------

SUBSIDY = "빈집 철거 보조금 안내\n\n철거 보조금은 주택 한 동당 최대 1,500만 원까지 지원됩니다."


def _es_status(topo: Topology) -> str:
    for url in topo.es_urls:  # any live node answers for the cluster
        try:
            return httpx.get(f"{url}/_cluster/health", timeout=5).json()["status"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue
    return "unreachable"


def _wait_es(topo: Topology, want: str, timeout_s: float) -> float:
    started = time.monotonic()
    while (seen := _es_status(topo)) != want:
        assert time.monotonic() - started < timeout_s, f"the cluster was {seen}, not {want}, after {timeout_s:g} s"
        time.sleep(0.5)
    return time.monotonic() - started


def _indexed_through_nginx(topo: Topology, key: str, slug: str) -> int:
    """Upload a document through nginx; the topology's worker indexes it into the cluster."""
    r = httpx.post(
        f"{topo.url}/api/knowledge/documents/",
        data={"collection": slug},
        files={"files": ("subsidy.txt", SUBSIDY.encode(), "text/plain")},
        headers=_bearer(key),
        timeout=30,
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()[0]["document"]["id"]
    deadline = time.monotonic() + 60
    while (status := httpx.get(f"{topo.url}/api/knowledge/documents/{doc_id}/", headers=_bearer(key)).json())[
        "status"
    ] != "indexed":
        assert status["status"] in ("pending", "indexing") and time.monotonic() < deadline, status
        time.sleep(0.3)
    return doc_id


def _search_and_answer(topo: Topology, key: str, slug: str, seconds: float, out: list) -> None:
    """Alternately a REST search and a /v1 answer with retrieval, both on the collection:
    (t, kind, status, elapsed, the first document: found by the search, or the answer's first source)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        asked = time.monotonic()
        try:
            r = httpx.post(
                f"{topo.url}/api/knowledge/search/",
                json={"query": "철거 보조금은 얼마까지?", "collections": [slug], "top_k": 3},
                headers=_bearer(key),
                timeout=15,
            )
            top = r.json()["results"][0]["document_id"] if r.status_code == 200 and r.json()["results"] else None
            out.append((asked - started, "search", r.status_code, time.monotonic() - asked, top))
        except httpx.HTTPError:
            out.append((asked - started, "search", -1, time.monotonic() - asked, None))
        asked = time.monotonic()
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"철거 보조금은 얼마까지? {uuid.uuid4().hex[:6]}"}],
            "max_tokens": 32,
            "collection": slug,
        }
        try:
            r = httpx.post(f"{topo.url}/v1/chat/completions", json=body, headers=_bearer(key), timeout=15)
            sources = r.json().get("sources") or [] if r.status_code == 200 else []
            out.append(
                (
                    asked - started,
                    "answer",
                    r.status_code,
                    time.monotonic() - asked,
                    sources[0]["document_id"] if sources else None,
                )
            )
        except httpx.HTTPError:
            out.append((asked - started, "answer", -1, time.monotonic() - asked, None))
        time.sleep(0.05)


def _search_check(topo: Topology) -> dict:
    """The search dependency in a replica's readiness report (the report is fresh every READYZ_CACHE_S)."""
    r = httpx.get(f"{topo.servers[0].url}/readyz", headers=_bearer(topo.readyz_token), timeout=10)
    return {"http": r.status_code, **r.json()["checks"]["search"]}


def test_an_elasticsearch_node_killed_under_traffic_loses_no_search(topology):
    from knowledge.services import collection_create, collection_delete

    subprocess.run([str(REPO / "deploy/local/up"), "es-cluster"], check=True, capture_output=True, timeout=300)
    _wait_es(topology, "green", 120)  # a node an earlier run left down is back
    key = _key_with_limit(topology, 100_000, ("chat", "knowledge:read", "knowledge:write"), superuser=True)
    collection = collection_create(name=f"클러스터 {topology.prefix}", slug=f"{topology.prefix}-es", is_public=True)
    killed = None
    try:
        doc_id = _indexed_through_nginx(topology, key, collection.slug)
        _wait_es(topology, "green", 60)
        master = httpx.get(f"{topology.es_urls[0]}/_cat/master?format=json", timeout=5).json()[0]["node"]
        killed = next(n for n in ("vh-es-1", "vh-es-2", "vh-es-3") if n != master)
        samples: list = []
        traffic = threading.Thread(target=_search_and_answer, args=(topology, key, collection.slug, 20, samples))
        traffic.start()
        time.sleep(3)
        pid = int((REPO / ".local" / "run" / f"es-cluster-{killed.rsplit('-', 1)[1]}.pid").read_text())
        os.kill(pid, signal.SIGKILL)  # a crash, not a shutdown
        killed_at = time.monotonic()
        traffic.join()
        to_yellow = time.monotonic() - killed_at + _wait_es(topology, "yellow", 60)
        deadline = time.monotonic() + 15
        while (check := _search_check(topology))["status"] != "degraded":
            assert time.monotonic() < deadline, check
            time.sleep(0.5)
        counts = Counter((kind, status) for _, kind, status, _, _ in samples)
        slowest = max(elapsed for _, _, _, elapsed, _ in samples)
        found = Counter(kind for _, kind, status, _, top in samples if status == 200 and top == doc_id)
        print(
            f"\nES node {killed} killed at 3 s (master {master}): {len(samples)} requests through nginx, "
            f"{dict(counts)}, slowest {slowest:.2f} s; the document first in {dict(found)}; cluster yellow "
            f"{to_yellow:.1f} s after the kill; /readyz {check['http']} with search {check['status']}: {check['detail']}"
        )
        assert set(counts) == {("search", 200), ("answer", 200)}, counts
        assert slowest < 10
        assert found == Counter(kind for _, kind, _, _, _ in samples), "a search or an answer lost the document"
        assert check["http"] == 200  # degraded, not down: the replica still serves
    finally:
        collection_delete(collection=collection)
        if killed:
            subprocess.run([str(REPO / "deploy/local/up"), "es-cluster"], check=True, capture_output=True, timeout=300)
            print(f"{killed} started again; green after {_wait_es(topology, 'green', 180):.1f} s")


def test_a_postgresql_restart_under_traffic_loses_no_acknowledged_answer(topology):
    from django.db import OperationalError, connections

    from chat.models import Message

    key = _key_with_limit(topology, 100_000)
    samples: list = []
    acked: list[tuple[str, str]] = []

    def traffic() -> None:
        started = time.monotonic()
        while time.monotonic() - started < 25:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"빈집 세금 {uuid.uuid4().hex[:8]}"}],
                "max_tokens": 32,
                "store": True,
                "retrieval": False,
            }
            sent = time.monotonic()
            try:
                r = httpx.post(f"{topology.url}/v1/chat/completions", json=body, headers=_bearer(key), timeout=15)
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            samples.append((sent - started, status, time.monotonic() - sent))
            if status == 200:
                answer = r.json()
                acked.append((answer["conversation_id"], answer["choices"][0]["message"]["content"]))
            time.sleep(0.1)

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(3)
    restart_started = time.monotonic()
    subprocess.run(["pg_ctlcluster", "15", "main", "restart", "-m", "fast"], check=True, timeout=60)
    restart_s = time.monotonic() - restart_started
    thread.join()
    deadline, missing = time.monotonic() + 30, acked
    while missing and time.monotonic() < deadline:  # deferred final writes land once the database is back
        try:
            missing = [
                (cid, text)
                for cid, text in acked
                if not Message.objects.filter(
                    conversation_id=cid, role="assistant", status="complete", content=text
                ).exists()
            ]
        except OperationalError:  # this process's own connections died with the server: reconnect
            connections.close_all()
        if missing:
            time.sleep(0.5)
    counts = Counter(status for _, status, _ in samples)
    slowest = max(elapsed for _, _, elapsed in samples)
    print(
        f"\nPostgreSQL restarted at 3 s (took {restart_s:.1f} s): {len(samples)} requests with store=true, "
        f"{dict(counts)}, slowest {slowest:.2f} s, every request 200 again "
        f"{_recovered_after(samples, 3):.1f} s after the restart began; {len(acked)} acknowledged, "
        f"{len(missing)} of them not stored"
    )
    assert not counts.keys() - {200, 503}, counts
    assert slowest < 10
    assert missing == []
    assert all(status == 200 for t, status, _ in samples if t > 3 + restart_s + 15)
