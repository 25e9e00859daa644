"""Steady load for the fault suite: a few clients, each one request at a time, every outcome recorded.

Clients (each a loop in one asyncio task):

- ``v1``: ``POST /v1/chat/completions``, JSON, ``store: false``, with retrieval (needs no
  storage: must never answer 500 or HTML, also while PostgreSQL is down); an answer without
  sources is ``degraded`` (the question is about the indexed document);
- ``v1_stream``: the same streamed, ``store: true``, without retrieval (the model every time);
- ``rest``: ``POST /api/conversations/<id>/messages/`` as SSE with an API key;
- ``ws_user``: the chat websocket of a signed-in user (session cookie), a new socket per question;
- ``ws_anon``: the same for an anonymous visitor;
- ``readyz``: the public ``/readyz`` and its detail (with the internal token).

Every answer the platform acknowledged (its id came back and its end event arrived) is
remembered with its text, so the suite can check it was stored.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from tests.faults.rig import QUESTION

DEADLINE_S = 10.0  # the documented upper bound of any request under any fault
CLIENT_TIMEOUT_S = 15.0  # beyond the deadline: a request taking longer is recorded as a hang
PAUSE_S = 0.25

OK, DEGRADED, REFUSED, STREAM_ERROR, HTTP_500, HTML, HANG, UNEXPECTED = (
    "ok",
    "degraded",
    "refused",
    "stream_error",
    "http_500",
    "html",
    "hang",
    "unexpected",
)
OUTCOMES = (OK, DEGRADED, REFUSED, STREAM_ERROR, HTTP_500, HTML, HANG, UNEXPECTED)


@dataclass
class Sample:
    client: str
    at: float  # monotonic start
    elapsed: float
    outcome: str
    status: int | None = None
    detail: str = ""


@dataclass
class Acked:
    """An answer the platform acknowledged: where it was stored, and what it said."""

    client: str
    message_id: int | None
    conversation_id: str | None
    content: str
    status: str  # complete | partial


@dataclass
class Load:
    base_url: str
    ws_url: str
    api_key: str
    user_cookie: str
    anon_cookie: str
    conversation_id: str  # the rest client's conversation
    readyz_token: str
    samples: list[Sample] = field(default_factory=list)
    readyz: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    streaming_now: int = 0  # v1_stream answers between their first token and their end
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _n: int = 0

    def question(self) -> str:
        self._n += 1  # unique: never a response-cache hit, always a real answer
        return f"{QUESTION} ({self._n})"

    # --- running ------------------------------------------------------------------------

    async def run(self) -> None:
        self._stop.clear()
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
            await asyncio.gather(
                self._loop("v1", lambda: self._v1(http)),
                self._loop("v1_stream", lambda: self._v1_stream(http)),
                self._loop("rest", lambda: self._rest(http)),
                self._loop("ws_user", lambda: self._ws("ws_user", self.user_cookie)),
                self._loop("ws_anon", lambda: self._ws("ws_anon", self.anon_cookie)),
                self._readyz_loop(http),
            )

    def stop(self) -> None:
        self._stop.set()

    async def _loop(self, client: str, one) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                outcome, status, detail = await asyncio.wait_for(one(), CLIENT_TIMEOUT_S)
            except TimeoutError:
                outcome, status, detail = HANG, None, f"no answer in {CLIENT_TIMEOUT_S:g}s"
            except Exception as exc:  # the server broke the connection: never expected
                outcome, status, detail = UNEXPECTED, None, f"{type(exc).__name__}: {exc}"[:200]
            elapsed = time.monotonic() - started
            if outcome != HANG and elapsed > DEADLINE_S:
                outcome, detail = HANG, f"answered after {elapsed:.1f}s ({outcome}: {detail})"
            self.samples.append(Sample(client, started, elapsed, outcome, status, detail))
            await asyncio.sleep(PAUSE_S)

    async def _readyz_loop(self, http: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                public = await http.get(f"{self.base_url}/readyz", timeout=5)
                detail = await http.get(
                    f"{self.base_url}/readyz", headers={"Authorization": f"Bearer {self.readyz_token}"}, timeout=5
                )
                self.readyz.append((at, public.status_code, detail.json()))
            except (httpx.HTTPError, ValueError) as exc:
                self.readyz.append((at, 0, {"error": str(exc)}))
            await asyncio.sleep(0.5)

    # --- clients ------------------------------------------------------------------------

    def _http_error(self, response: httpx.Response) -> tuple[str, int, str]:
        kind = response.headers.get("content-type", "")
        if "json" not in kind:
            return HTML, response.status_code, response.text[:120]
        if response.status_code >= 500 and response.status_code not in (502, 503, 504):
            return HTTP_500, response.status_code, response.text[:200]
        if response.status_code in (429, 502, 503, 504):
            code = response.json().get("error", {}).get("code", "")
            if "Retry-After" not in response.headers:
                return UNEXPECTED, response.status_code, f"{code} without Retry-After"
            return REFUSED, response.status_code, code
        return UNEXPECTED, response.status_code, response.text[:200]

    async def _v1(self, http: httpx.AsyncClient) -> tuple[str, int | None, str]:
        body = {
            "model": "scripted-model",
            "messages": [{"role": "user", "content": self.question()}],
            "max_tokens": 16,
            "store": False,
        }
        r = await http.post(f"{self.base_url}/v1/chat/completions", json=body, headers=self._bearer())
        if r.status_code != 200:
            return self._http_error(r)
        body = r.json()
        if not body["choices"][0]["message"]["content"]:
            return UNEXPECTED, 200, "empty answer"
        # The question is answered by the indexed document: no sources means retrieval was down.
        return (OK, 200, "") if body.get("sources") else (DEGRADED, 200, "no sources")

    async def _v1_stream(self, http: httpx.AsyncClient) -> tuple[str, int | None, str]:
        body = {
            "model": "scripted-model",
            "messages": [{"role": "user", "content": self.question()}],
            "max_tokens": 64,
            "stream": True,
            "store": True,
            "retrieval": False,
        }
        text: list[str] = []
        counted = False
        try:
            async with http.stream(
                "POST", f"{self.base_url}/v1/chat/completions", json=body, headers=self._bearer()
            ) as r:
                if r.status_code != 200:
                    await r.aread()
                    return self._http_error(r)
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        return OK, 200, ""
                    event = json.loads(line[6:])
                    if "error" in event:
                        return STREAM_ERROR, 200, event["error"].get("code", "")
                    for choice in event.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece and not counted:
                            counted = True
                            self.streaming_now += 1
                        text.append(piece)
                        if choice.get("finish_reason") and event.get("conversation_id"):
                            self.acked.append(Acked("v1_stream", None, event["conversation_id"], "".join(text),
                                                    "complete"))  # fmt: skip
            return UNEXPECTED, 200, "stream ended without [DONE]"
        finally:
            if counted:
                self.streaming_now -= 1

    async def _rest(self, http: httpx.AsyncClient) -> tuple[str, int | None, str]:
        url = f"{self.base_url}/api/conversations/{self.conversation_id}/messages/"
        body = {"message": self.question(), "stream": True}
        message_id, text = None, []
        async with http.stream("POST", url, json=body, headers=self._bearer()) as r:
            if r.status_code != 200:
                await r.aread()
                return self._http_error(r)
            name = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if name == "start":
                        message_id = data["message_id"]
                    elif name == "token":
                        text.append(data["text"])
                    elif name == "error":
                        return STREAM_ERROR, 200, data.get("code", "")
                    elif name == "end":
                        self.acked.append(Acked("rest", message_id, None, "".join(text), data["status"]))
                        return OK, 200, ""
        return UNEXPECTED, 200, "stream ended without an end event"

    async def _ws(self, client: str, cookie: str) -> tuple[str, int | None, str]:
        headers = {"Cookie": cookie}
        async with websockets.connect(
            f"{self.ws_url}/ws/chat/", additional_headers=headers, origin=self.base_url, open_timeout=CLIENT_TIMEOUT_S
        ) as ws:
            try:
                await ws.send(json.dumps({"type": "message", "content": self.question()}))
            except websockets.ConnectionClosed:
                pass  # refused at connect (an error frame, then close 1013): the frames are still there to read
            message_id, text = None, []
            while True:
                try:
                    raw = await ws.recv()
                except websockets.ConnectionClosed:
                    break
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "start":
                    message_id = frame["message_id"]
                elif kind == "token":
                    text.append(frame["text"])
                elif kind == "end":
                    self.acked.append(Acked(client, message_id, str(frame["conversation_id"]), "".join(text),
                                            frame["status"]))  # fmt: skip
                    return OK, None, ""
                elif kind == "error":
                    code = frame.get("code", "")
                    if message_id is None and code in ("service_unavailable", "model_unavailable", "rate_limited"):
                        return REFUSED, None, code  # refused before anything was stored: fine
                    return STREAM_ERROR, None, code
        return UNEXPECTED, None, f"socket closed ({ws.close_code})"

    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "X-Request-ID": f"faults-{uuid.uuid4().hex[:16]}"}
