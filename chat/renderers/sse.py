"""Server-Sent Events of the REST chat API: ``event: start|sources|token|end|error``, JSON data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from chat.errors import PlatformError
from chat.types import ChatEvent, End, Error, Routed, Sources, Start, Token
from monitoring.logging import get_request_id
from monitoring.metrics import CHAT_STREAM_ERRORS


def count_stream_error(channel: str, err: PlatformError) -> None:
    """An error sent inside a stream that had started (HTTP 200 already on the wire)."""
    CHAT_STREAM_ERRORS.labels(channel, f"{err.http_status // 100}xx").inc()


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def render(event: ChatEvent) -> bytes:
    if type(event) is Token:
        return sse_event("token", {"text": event.text})
    if isinstance(event, Start):
        return sse_event(
            "start",
            {"conversation_id": str(event.conversation_id), "message_id": event.message_id, "cached": event.cached},
        )
    if isinstance(event, Sources):
        return sse_event("sources", {"sources": event.sources})
    if isinstance(event, End):
        return sse_event(
            "end",
            {
                "status": event.status,
                "message_id": event.message_id,
                "usage": event.usage,
                "latency": event.latency,
                "citations": event.citations,
                "model": event.model_group,
            },
        )
    if isinstance(event, Routed):
        return sse_event("routed", {"model": event.model})
    assert isinstance(event, Error)
    body = {**event.error.as_dict()["error"], "message_id": event.message_id}
    if event.error.http_status >= 500:
        body["request_id"] = get_request_id()  # the log lines with this id hold the detail
    return sse_event("error", body)


async def sse_stream(first: ChatEvent, events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
    """The events as SSE. Closing this iterator (client gone) closes the service's generator.

    The response is already 200 when an error event goes out: it is counted in
    ``chat_stream_errors_total`` so the error-rate alert sees it.
    """
    async with aclosing(events) as stream:
        yield render(first)
        async for event in stream:
            if isinstance(event, Error):
                count_stream_error("rest", event.error)
            yield render(event)
