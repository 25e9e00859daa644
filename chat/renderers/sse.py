"""Server-Sent Events of the REST chat API: ``event: start|sources|token|end|error``, JSON data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson

from chat.types import ChatEvent, End, Error, Routed, Sources, Start, Token


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
    return sse_event("error", {**event.error.as_dict()["error"], "message_id": event.message_id})


async def sse_stream(first: ChatEvent, events: AsyncIterator[ChatEvent]) -> AsyncIterator[bytes]:
    """The events as SSE. Closing this iterator (client gone) closes the service's generator."""
    async with aclosing(events) as stream:
        yield render(first)
        async for event in stream:
            yield render(event)
