"""Traces in a real Jaeger: a live server exporting over OTLP, read back through Jaeger's query API.

Jaeger (v2, all-in-one, in-memory) is built from the Go module proxy by ``deploy/local/jaeger``;
``make test`` starts that build in the background when it starts (it takes ~8.5 minutes on a
fresh machine) and these tests wait for it, then start Jaeger (``deploy/local/up jaeger``).
Nothing here skips: without Go or Jaeger the tests fail, saying why.

Each test's server reports under its own service name, so the traces found are its own.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from chat.models import ChatSettings
from tests.chat.conftest import alice, guide, nonce, session_cookie  # noqa: F401 (fixtures)
from tests.live import REPO, LiveServer

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.timeout(1800)]

JAEGER_QUERY = "http://127.0.0.1:16686"
OTLP_HTTP = "http://127.0.0.1:4318"
# The background build of a fresh machine takes ~8.5 minutes on 2 busy cores: wait generously.
BUILD_WAIT_S = float(os.environ.get("VH_JAEGER_BUILD_WAIT_S", "1500"))
BUILD_PID = REPO / ".local" / "run" / "jaeger-install.pid"


def _pid_alive(path) -> bool:
    try:
        os.kill(int(path.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def jaeger() -> str:
    """Jaeger's query URL, once it is built and answering (waits for ``make test``'s background build)."""
    deadline = time.monotonic() + BUILD_WAIT_S
    while BUILD_PID.exists() and _pid_alive(BUILD_PID):
        assert time.monotonic() < deadline, f"the background Jaeger build is still running after {BUILD_WAIT_S:.0f}s"
        time.sleep(5)
    # Builds it first if no background build did (minutes), then starts it and waits for its API.
    up = subprocess.run(
        [str(REPO / "deploy" / "local" / "up"), "jaeger"], capture_output=True, text=True, timeout=BUILD_WAIT_S
    )
    assert up.returncode == 0, f"deploy/local/up jaeger failed:\n{up.stdout}\n{up.stderr}"
    return JAEGER_QUERY


def traced_server(service: str, **env: str) -> LiveServer:
    return LiveServer(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_HTTP,
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            # Export within 0.2 s instead of 5 s, so the test need not wait long.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            **env,
        }
    )


@pytest.fixture
def answer_settings(transactional_db) -> Iterator[ChatSettings]:
    """Retrieval with reranking, sized for the small test model."""
    from chat import access, config

    row = ChatSettings(
        pk=1,
        system_prompt="Answer in one short sentence using the sources. Cite sources like [1].",
        retrieval_enabled=True,
        top_k=2,
        rerank_enabled=True,
        history_token_budget=120,
        context_window=512,
        temperature=0.0,
        max_tokens=8,
    )
    row.save()
    access.forget()
    yield row
    config.invalidate()
    access.forget()


# --- reading Jaeger ------------------------------------------------------------------------------


class Trace:
    """One trace from Jaeger's v1 query API: spans by name, parents, tags and logs (events)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.id: str = data["traceID"]
        self.spans: list[dict[str, Any]] = data["spans"]
        self.by_id = {s["spanID"]: s for s in self.spans}

    def names(self) -> set[str]:
        return {s["operationName"] for s in self.spans}

    def one(self, name: str) -> dict[str, Any]:
        found = [s for s in self.spans if s["operationName"] == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r} in trace {self.id}: {sorted(self.names())}"
        return found[0]

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        for ref in span.get("references") or []:
            if ref["refType"] == "CHILD_OF" and ref["traceID"] == self.id:
                return self.by_id.get(ref["spanID"])
        return None

    def ancestors(self, span: dict[str, Any]) -> list[str]:
        names, current = [], self.parent(span)
        while current is not None:
            names.append(current["operationName"])
            current = self.parent(current)
        return names

    def below(self, name: str, **tags: Any) -> list[dict[str, Any]]:
        """Spans with these tags anywhere under the span named ``name``."""
        return [s for s in self.spans if name in self.ancestors(s) and all(tag(s, k) == v for k, v in tags.items())]

    def assert_child(self, child: str, parent: str) -> None:
        got = self.parent(self.one(child))
        assert got is not None and got["operationName"] == parent, (
            f"{child} is under {got and got['operationName']}, not {parent}"
        )


def tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span.get("tags") or [] if t["key"] == key), None)


def event_names(span: dict[str, Any]) -> set[str]:
    return {f["value"] for log in span.get("logs") or [] for f in log["fields"] if f["key"] == "event"}


def find_traces(jaeger_url: str, service: str, *, having: str, timeout: float = 30) -> list[Trace]:
    """The service's traces that hold a span named ``having`` (polls: export is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(
            f"{jaeger_url}/api/traces", params={"service": service, "limit": 50, "lookback": "1h"}, timeout=10
        )
        traces = [Trace(t) for t in (response.json().get("data") or []) if response.status_code == 200]
        found = [t for t in traces if having in t.names()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


async def websocket_answer(server: LiveServer, question: str) -> list[dict[str, Any]]:
    headers = {"Origin": server.url}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.ws_url}/ws/chat/", headers=headers, timeout=30) as ws:
            await ws.send_json({"type": "message", "content": question})
            frames = []
            while True:
                frame = await ws.receive_json(timeout=180)
                if frame["type"] == "heartbeat":
                    continue
                frames.append(frame)
                if frame["type"] in ("end", "error"):
                    return frames


# --- the tests -------------------------------------------------------------------------------------


async def test_a_websocket_answer_is_one_trace_with_its_steps(jaeger, answer_settings, guide):  # noqa: F811
    service = f"vh-test-ws-{uuid.uuid4().hex[:8]}"
    server = traced_server(service)
    server.start()
    try:
        frames = await websocket_answer(server, f"How much is the vacant house demolition subsidy? ({nonce()})")
    finally:
        server.stop()  # flushes what is queued (the SDK exports at exit)
    assert frames[-1]["type"] == "end", frames[-1]
    start = frames[0]
    assert start["type"] == "start" and len(start.get("trace_id", "")) == 32, start

    traces = find_traces(jaeger, service, having="chat.answer")
    assert len(traces) == 1, f"{len(traces)} traces hold an answer span (one per answer, not per socket)"
    tr = traces[0]
    assert tr.id == start["trace_id"], "the start frame names the answer's trace"
    root = tr.one("chat.answer")
    assert tr.parent(root) is None and not root.get("references"), "the answer span starts its trace"

    # The steps, each under the answer: admission, retrieval and its sub-steps, prompt, generation, final write.
    for step in ("chat.admission", "retrieval", "chat.prompt", "inference.generation", "chat.final_write"):
        assert "chat.answer" in tr.ancestors(tr.one(step)), f"{step} is not under the answer"
    for sub in ("retrieval.search", "retrieval.fusion", "retrieval.rerank"):
        tr.assert_child(sub, "retrieval")
    # The question is embedded once, before curated replies and retrieval use its vector.
    tr.assert_child("retrieval.embed_query", "chat.answer")

    # The clients' spans under the steps that made them.
    assert tr.below("chat.admission", **{"db.system": "redis"}), "no Redis span under the admission"
    assert tr.below("retrieval.search", **{"db.system": "elasticsearch"}), "no Elasticsearch span under the search"
    assert tr.below("retrieval.embed_query", **{"triton.model": "embedding"}), "no Triton call under the embedding"
    assert tr.below("retrieval.rerank", **{"triton.model": "reranker"}), "no Triton call under the rerank"
    assert tr.below("chat.final_write", **{"db.system": "postgresql"}), "no database span under the final write"
    assert tr.below("chat.final_write", **{"db.system": "redis"}), "no Redis span (history) under the final write"

    generation = tr.one("inference.generation")
    assert tag(generation, "inference.ttft_ms") is not None and tag(generation, "inference.ttft_ms") > 0
    assert tag(generation, "gen_ai.usage.output_tokens") == frames[-1]["usage"]["completion_tokens"]
    assert tag(generation, "gen_ai.usage.input_tokens") > 0
    assert "first_token" in event_names(generation)
    assert tr.below("inference.generation", **{"http.request.method": "POST"}) or tr.below(
        "inference.generation", **{"http.method": "POST"}
    ), "no HTTP client span under the generation"


def test_a_rest_answer_is_one_trace_with_the_platform_spans(jaeger, answer_settings, guide, alice):  # noqa: F811
    """What is instrumented outside the files being rewritten, through a REST answer (SSE)."""
    service = f"vh-test-rest-{uuid.uuid4().hex[:8]}"
    server = traced_server(service)
    server.start()
    csrf = "a" * 32
    try:
        with httpx.Client(
            base_url=f"{server.url}/api",
            cookies={"sessionid": session_cookie(alice), "csrftoken": csrf},
            headers={"X-CSRFToken": csrf},
            timeout=180,
        ) as api:
            conversation = api.post("/conversations/", json={"title": "traced"}).json()
            url = f"/conversations/{conversation['id']}/messages/"
            question = f"How much is the vacant house demolition subsidy? ({nonce()})"
            with api.stream("POST", url, json={"message": question, "stream": True}) as response:
                assert response.status_code == 200
                trace_id = response.headers["X-Trace-ID"]
                body = response.read().decode()
        assert "event: end" in body, body[-500:]
    finally:
        server.stop()

    traces = [t for t in find_traces(jaeger, service, having="inference.generation") if t.id == trace_id]
    assert len(traces) == 1, "the X-Trace-ID header names the answer's trace"
    tr = traces[0]
    root = next(s for s in tr.spans if tr.parent(s) is None)
    assert root["operationName"] == "POST /api/conversations/<uuid:conversation_id>/messages/", root["operationName"]
    assert tag(root, "http.route") == "/api/conversations/<uuid:conversation_id>/messages/"

    assert tr.below("chat.admission", **{"db.system": "redis"}), "no Redis span under the admission"
    assert "chat.settle" in tr.names()
    assert tag(tr.one("inference.embed"), "inference.query") is True
    # The query's embedding and the rerank each went out as a micro-batch (of this one request:
    # links to other requests sharing a batch are tested in tests/monitoring/test_tracing.py).
    for caller, model in (("inference.embed", "embedding"), ("inference.rerank", "reranker")):
        batches = [s for s in tr.below(caller) if s["operationName"] == "inference.batch"]
        assert len(batches) == 1 and tag(batches[0], "batch.requests") == 1, f"no micro-batch span under {caller}"
        assert tr.below(caller, **{"triton.model": model}), f"no Triton call under {caller}"
    assert [s for s in tr.spans if tag(s, "db.system") == "elasticsearch"], "no Elasticsearch span"
    assert [s for s in tr.spans if tag(s, "db.system") == "postgresql"], "no database span"

    generation = tr.one("inference.generation")
    assert tag(generation, "inference.ttft_ms") > 0
    assert tag(generation, "gen_ai.usage.output_tokens") > 0
    assert "first_token" in event_names(generation)

    # The same trace id in the server's log lines (LOG_FORMAT plain: "[<request id> trace=<id>]").
    assert f"trace={trace_id}" in server.log_path.read_text(errors="replace")
