"""OpenAI's wire format: ``chat.completion`` bodies, ``chat.completion.chunk`` streams, errors.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with the
platform error's status, so the official SDKs raise their usual exception classes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

import numpy as np
import orjson
from django.http import HttpResponse

from chat.errors import BudgetExceeded, PlatformError, RateLimited
from chat.renderers.sse import count_stream_error
from chat.types import ChatEvent, End, Error, Routed, Sources, Start, Token
from monitoring.logging import get_request_id


def _openai_type(err: PlatformError) -> str:
    if isinstance(err, BudgetExceeded):
        return "insufficient_quota"
    if isinstance(err, RateLimited):
        return "tokens" if err.extra.get("reason") == "tokens" else "requests"
    if err.http_status == 401:
        return "authentication_error"
    if err.http_status == 403:
        return "permission_error"
    if err.http_status >= 500:
        return "server_error"
    return "invalid_request_error"


def _openai_code(err: PlatformError) -> str:
    if isinstance(err, BudgetExceeded):
        return "insufficient_quota"  # OpenAI's code for a spent quota (also a 429)
    if isinstance(err, RateLimited):
        return "rate_limit_exceeded"
    if err.http_status == 401:
        return "invalid_api_key"
    return err.code


def openai_error_body(err: PlatformError) -> dict[str, Any]:
    param = next(iter(err.fields), None) if err.fields else None
    body = {"message": err.message, "type": _openai_type(err), "param": param, "code": _openai_code(err)}
    if err.http_status >= 500:
        body["request_id"] = get_request_id()  # also in X-Request-ID; the log lines with it hold the detail
    return {"error": body}


def openai_error_response(err: PlatformError) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(openai_error_body(err)), status=err.http_status, content_type="application/json"
    )
    for name, value in (err.headers or {}).items():
        response[name] = value
    if err.http_status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def model_object(name: str, *, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owned_by}


def models_body(names: Iterable[str], *, owned_by: str) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(n, owned_by=owned_by) for n in names]}


def embeddings_json(model: str, vectors: np.ndarray, *, prompt_tokens: int, encoding_format: str) -> bytes:
    """``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``.

    ``float``: the float32 values (orjson writes each as the shortest decimal that reads back
    as the same float32); ``base64``: their little-endian bytes, as OpenAI sends them (the
    official SDK asks for base64 by default and decodes it with numpy).
    """
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding_format == "base64":
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode()}
            for i, row in enumerate(rows)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def completion_body(final: End, *, completion_id: str, model: str) -> dict[str, Any]:
    """A whole (non-streamed) answer as ``chat.completion``, with the platform's ``sources``."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": final.content},
                "logprobs": None,
                "finish_reason": final.finish_reason or "stop",
            }
        ],
        "usage": final.usage,
        "sources": final.citations,
    }
    if final.conversation_id is not None:
        body["conversation_id"] = str(final.conversation_id)
    return body


class ChunkWriter:
    """OpenAI ``chat.completion.chunk`` events; a token costs one ``orjson.dumps`` of its text."""

    def __init__(self, completion_id: str, model: str, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.completion_id = completion_id
        self.created = int(time.time())
        self.token_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._head(model)

    def _head(self, model: str) -> None:
        self.head = orjson.dumps(
            {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created, "model": model}
        )[:-1]  # without the closing brace: each event appends its own fields
        self.token_prefix = b"data: " + self.head + b',"choices":[{"index":0,"delta":{"content":'

    def event(self, fields: dict[str, Any]) -> bytes:
        return b"data: " + self.head + b"," + orjson.dumps(fields)[1:] + b"\n\n"

    def role_chunk(self) -> bytes:
        return self.event(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )

    def render(self, first: ChatEvent, events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
        """The stream's SSE events. A cached answer (a replay: every event is ready at once) goes
        out as ONE body write holding all its events, the same bytes an answer from the model
        sends in one write per chunk; a client still sees each chunk as its own event."""
        if isinstance(first, Start) and first.cached:
            return self._at_once(first, events)
        return self._events(first, events)

    async def _at_once(self, first: ChatEvent, events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
        yield b"".join([frame async for frame in self._events(first, events)])

    async def _events(self, first: ChatEvent, events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
        # The role chunk goes out with the first token (or the end), not at Start: a fallback model
        # chosen before the first token (Routed) is then the ``model`` of every chunk.
        role_pending = False
        async with aclosing(events) as stream:
            event = first
            while True:
                if type(event) is Token:
                    if role_pending:
                        role_pending = False
                        yield self.role_chunk() + self.token_prefix + orjson.dumps(event.text) + self.token_suffix
                    else:
                        yield self.token_prefix + orjson.dumps(event.text) + self.token_suffix
                elif isinstance(event, Start):
                    role_pending = True
                elif isinstance(event, Sources):
                    pass  # sent with the final chunk, once the citations are known
                elif isinstance(event, Routed):
                    self._head(event.model)  # a fallback answers (before any token): chunks name it
                elif isinstance(event, End):
                    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": event.finish_reason or "stop"}
                    extra: dict[str, Any] = {"sources": event.citations}
                    if event.conversation_id is not None:
                        extra["conversation_id"] = str(event.conversation_id)
                    yield (self.role_chunk() if role_pending else b"") + self.event({"choices": [final], **extra})
                    if self.include_usage:
                        yield self.event({"choices": [], "usage": event.usage})
                    yield b"data: [DONE]\n\n"
                    return
                elif isinstance(event, Error):
                    # OpenAI's way of failing mid-stream: an error event, then the stream ends
                    # (counted: the response itself went out as 200).
                    count_stream_error("openai", event.error)
                    role = self.role_chunk() if role_pending else b""
                    yield role + b"data: " + orjson.dumps(openai_error_body(event.error)) + b"\n\n"
                    return
                try:
                    event = await stream.__anext__()
                except StopAsyncIteration:
                    return
