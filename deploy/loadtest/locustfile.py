"""The pre-release load test: a realistic traffic mix at a fixed request rate (docs/operations.md, "Load test").

Run by ``deploy/loadtest/run.sh`` (``make loadtest``); by hand::

    export LOADTEST_API_KEY=vhk_... LOADTEST_RATE=2 LOADTEST_MULTIPLIER=2 LOADTEST_OUT=/tmp/lt
    .local/loadtest-venv/bin/locust -f deploy/loadtest/locustfile.py --headless \\
      --host http://127.0.0.1:8000 --run-time 300s -u $(python3 deploy/loadtest/mix.py) -r 100
    python3 deploy/loadtest/report.py /tmp/lt

The mix (shares of ``LOADTEST_RATE`` x ``LOADTEST_MULTIPLIER`` requests/s, each kind at its
own constant rate, so a slow kind cannot slow the others down):

* ``ws_chat`` 40 %: the browser chat: a websocket per user (kept open, like a tab), a question,
  the streamed answer to its ``end`` frame. Latency = question to last token; TTFT = to the first.
* ``rest_chat`` 15 %: ``POST /api/conversations/{id}/messages/`` streamed as SSE.
* ``openai`` 25 %: ``POST /v1/chat/completions``, half streamed (TTFT), half JSON.
* ``search`` 20 %: ``POST /api/knowledge/search/``.
* ``upload``: one small text document every ``LOADTEST_UPLOAD_EVERY_S`` seconds (ingested by
  the worker meanwhile), whatever the rate.

Questions: 30 % repeat a short FAQ list (the response cache answers those, as in real
traffic), 70 % are unique. Every request's outcome is recorded (``LOADTEST_OUT/samples-<label>.json``)
for ``report.py``; a refusal (429), a 5xx, an error frame or a timeout counts as an error.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
import time
import uuid
from typing import Any

import requests
import websocket  # websocket-client: blocking, made cooperative by Locust's gevent patching
from locust import HttpUser, User, constant_throughput, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mix import MIX, MULTIPLIER, RATE, users_for

LABEL = os.environ.get("LOADTEST_LABEL", f"{MULTIPLIER:g}x")
API_KEY = os.environ.get("LOADTEST_API_KEY", "")
SESSION = os.environ.get("LOADTEST_SESSION", "")  # a browser session cookie (else anonymous chat)
COLLECTION = os.environ.get("LOADTEST_COLLECTION", "loadtest")
UPLOAD_EVERY_S = float(os.environ.get("LOADTEST_UPLOAD_EVERY_S", "30"))
TIMEOUT_S = float(os.environ.get("LOADTEST_TIMEOUT_S", "60"))
OUT = os.environ.get("LOADTEST_OUT", "")

FAQ = [
    "빈집 철거 지원금은 얼마인가요?",
    "How much is the vacant house demolition subsidy?",
    "빈집 리모델링 지원 조건은 무엇인가요?",
    "When is the vacant house survey list published?",
    "빈집 신청 절차를 알려주세요.",
]
TOPICS = ["철거 지원", "repair support", "실태조사", "property tax", "신청 서류", "rent conditions", "등급 판정"]


def question() -> str:
    if random.random() < 0.3:
        return random.choice(FAQ)
    return f"{random.choice(TOPICS)}: {random.choice(FAQ)} ({uuid.uuid4().hex[:8]})"


# --- what every request did --------------------------------------------------------------------------

_samples: list[tuple[str, str, float, bool, float]] = []  # (type, name, ms, failed, at)
_lock = threading.Lock()
_started = time.time()


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: Any = None, **_kwargs: Any) -> None:
    with _lock:
        _samples.append((request_type, name, float(response_time), exception is not None, time.time()))


@events.quitting.add_listener
def _dump(environment: Any, **_kwargs: Any) -> None:
    if not OUT:
        return
    os.makedirs(OUT, exist_ok=True)
    with _lock:
        samples = list(_samples)
    errors: dict[str, dict[str, int]] = {}
    for (method, name, message), entry in environment.stats.errors.items() if environment.stats else []:
        errors.setdefault(name, {})[f"{method}: {message}"[:200]] = entry.occurrences
    data = {
        "label": LABEL,
        "rate": RATE,
        "multiplier": MULTIPLIER,
        "mix": MIX,
        "upload_every_s": UPLOAD_EVERY_S,
        "started": _started,
        "ended": time.time(),
        "run_s": float(os.environ.get("LOADTEST_RUN_S", "0")) or time.time() - _started,
        "users": {kind: users_for(kind)[0] for kind in MIX},
        "samples": samples,
        "errors": errors,
    }
    with open(os.path.join(OUT, f"samples-{LABEL}.json"), "w") as fh:
        json.dump(data, fh)


def fire(kind: str, name: str, started: float, *, error: BaseException | str | None = None, length: int = 0) -> None:
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=length,
        exception=RuntimeError(error) if isinstance(error, str) else error,
        context={},
    )


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}


# --- the kinds of traffic --------------------------------------------------------------------------------


class BrowserChat(User):
    """A chat tab: one websocket, questions one after another, answers streamed."""

    fixed_count = users_for("ws_chat")[0]
    wait_time = constant_throughput(users_for("ws_chat")[1])

    def on_start(self) -> None:
        self.ws: websocket.WebSocket | None = None

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def _connect(self) -> websocket.WebSocket:
        url = self.host.replace("http", "ws", 1) + "/ws/chat/"
        cookie = f"sessionid={SESSION}" if SESSION else None
        return websocket.create_connection(url, timeout=TIMEOUT_S, origin=self.host, cookie=cookie)

    @task
    def ask(self) -> None:
        started = time.perf_counter()
        try:
            if self.ws is None:
                self.ws = self._connect()
            self.ws.send(json.dumps({"type": "message", "content": question()}))
            first = None
            size = 0
            while True:
                frame = json.loads(self.ws.recv())
                kind = frame.get("type")
                if kind == "token":
                    size += len(frame["text"])
                    if first is None:
                        first = time.perf_counter()
                        fire("TTFT", "ws_chat", started)
                elif kind == "end":
                    if first is None:  # an empty answer: its first (and last) word is the end frame
                        fire("TTFT", "ws_chat", started)
                    fire("WS", "ws_chat", started, length=size)
                    return
                elif kind == "error":
                    fire("WS", "ws_chat", started, error=f"{frame.get('code')}: {frame.get('message')}"[:200])
                    return
        except Exception as exc:  # a timeout or a dropped socket: a new one next time
            if self.ws is not None:
                self.ws.close()
            self.ws = None
            fire("WS", "ws_chat", started, error=exc)


class Api(HttpUser):
    """JSON calls through Locust's client (timed to the whole body); streams through ``stream``."""

    abstract = True

    def on_start(self) -> None:
        self.client.headers.update(auth())
        # Locust's client would time a streamed response to its headers; this one is timed here,
        # to the last event (latency) and the first token (TTFT).
        self.http = requests.Session()
        self.http.headers.update(auth())

    def stream(self, kind: str, path: str, body: dict[str, Any], *, first_token: str, end: str) -> None:
        """POST a streaming request; record TTFT at the first line matching ``first_token``, latency at ``end``."""
        started = time.perf_counter()
        try:
            with self.http.post(self.host + path, json=body, stream=True, timeout=TIMEOUT_S) as response:
                if response.status_code != 200:
                    fire("POST", kind, started, error=f"HTTP {response.status_code}")
                    return
                first = None
                size = 0
                ended = failed = False
                for line in response.iter_lines(decode_unicode=True):
                    size += len(line)
                    if first is None and re.search(first_token, line):
                        first = time.perf_counter()
                        fire("TTFT", kind, started)
                    failed = failed or line == "event: error"
                    ended = ended or line == end
        except Exception as exc:
            fire("POST", kind, started, error=exc)
            return
        error = "error event" if failed else None if ended else f"stream ended without {end!r}"
        fire("POST", kind, started, error=error, length=size)


class RestChat(Api):
    """An integrator's conversation over REST, answers streamed as server-sent events."""

    fixed_count = users_for("rest_chat")[0]
    wait_time = constant_throughput(users_for("rest_chat")[1])
    conversation: str | None = None
    turns = 0

    @task
    def ask(self) -> None:
        if self.conversation is None or self.turns >= 8:  # a new conversation now and then: bounded history
            response = self.client.post("/api/conversations/", json={"title": "load"}, name="rest_chat [new]")
            if response.status_code != 201:
                return
            self.conversation, self.turns = response.json()["id"], 0
        self.turns += 1
        url = f"/api/conversations/{self.conversation}/messages/"
        self.stream(
            "rest_chat", url, {"message": question(), "stream": True}, first_token="event: token", end="event: end"
        )


class OpenAICompatible(Api):
    """``/v1/chat/completions``, as the official SDKs send it (half streamed)."""

    fixed_count = users_for("openai")[0]
    wait_time = constant_throughput(users_for("openai")[1])

    @task
    def complete(self) -> None:
        body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": question()}]}
        if random.random() < 0.5:
            body["stream"] = True
            self.stream(
                "openai [stream]", "/v1/chat/completions", body, first_token=r'"content":"[^"]', end="data: [DONE]"
            )
            return
        with self.client.post(
            "/v1/chat/completions", json=body, catch_response=True, name="openai [json]", timeout=TIMEOUT_S
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif not response.json().get("choices"):
                response.failure("no choices")


class Search(Api):
    fixed_count = users_for("search")[0]
    wait_time = constant_throughput(users_for("search")[1])

    @task
    def search(self) -> None:
        body = {"query": question(), "top_k": 5, "collections": [COLLECTION]}
        with self.client.post("/api/knowledge/search/", json=body, catch_response=True, name="search") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif "results" not in response.json():
                response.failure("no results field")


class Upload(Api):
    """An editor adding a document now and then (the worker ingests it meanwhile)."""

    fixed_count = 1
    wait_time = constant_throughput(1 / UPLOAD_EVERY_S)

    @task
    def upload(self) -> None:
        text = f"Load test notice {uuid.uuid4().hex}\n\n{random.choice(FAQ)} {' '.join(random.sample(TOPICS, 3))}."
        body = {"collection": COLLECTION, "text": text, "format": "text", "title": "load test notice"}
        with self.client.post("/api/knowledge/documents/", json=body, catch_response=True, name="upload") as response:
            if response.status_code not in (200, 201, 202):
                response.failure(f"HTTP {response.status_code}")
