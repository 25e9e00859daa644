"""The browser chat's websocket frames (docs/chat.md has the protocol table)."""

from __future__ import annotations

from typing import Any

from chat.errors import PlatformError
from chat.markdown import answer_html
from chat.types import End, Start
from monitoring import tracing
from monitoring.logging import get_request_id


def error_frame(err: PlatformError, **extra: Any) -> dict[str, Any]:
    """``{"type": "error", "code", "message", "retry_after", ...}`` (extras only when set).

    A failure on our side (5xx) carries the connection's request id: the user can quote it,
    and the log lines with that id hold the detail the message leaves out.
    """
    frame = {"type": "error", **err.as_dict()["error"], **{k: v for k, v in extra.items() if v is not None}}
    frame.setdefault("retry_after", None)
    if err.http_status >= 500:
        frame.setdefault("request_id", get_request_id())
    return frame


def failed_frame(err: PlatformError, *, message_id: int | None, partial: str) -> dict[str, Any]:
    """An answer that failed midway: the error, and the partial text that was stored."""
    return error_frame(err, message_id=message_id, html=answer_html(partial, message_id) if partial else None)


def start_frame(event: Start) -> dict[str, Any]:
    frame = {
        "type": "start",
        "conversation_id": event.conversation_id,
        "message_id": event.message_id,
        "cached": event.cached,
    }
    # With tracing on, the answer's trace (each answer is one): what a user can quote in a report.
    trace_id = tracing.current_trace_id()
    if trace_id is not None:
        frame["trace_id"] = trace_id
    return frame


def sources_frame(sources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "sources", "sources": sources}


def token_frame(text: str) -> dict[str, Any]:
    return {"type": "token", "text": text}


def end_frame(event: End) -> dict[str, Any]:
    return {
        "type": "end",
        "status": event.status,
        "conversation_id": event.conversation_id,
        "message_id": event.message_id,
        "usage": event.usage,
        "latency": event.latency,
        "citations": event.citations,
        "cached": event.cached,
        "model": event.model_group,
        "html": answer_html(event.content, event.message_id),
    }


def stopped_frame(started: Start, partial: str) -> dict[str, Any]:
    """The end of an answer the user stopped (the partial text is stored)."""
    return {
        "type": "end",
        "status": "partial",
        "stopped": True,
        "conversation_id": started.conversation_id,
        "message_id": started.message_id,
        "html": answer_html(partial, started.message_id),
        "usage": None,
        "latency": None,
        "citations": None,
    }
