"""Operators' conversation export: ``GET /api/exports/conversations/`` as JSONL or CSV, streamed.

For the quality reviews public-service operators do: every conversation started in a date
range, with its messages, the sources each answer was given (citations) and the feedback
users left. Staff sessions, or an API key with the ``export`` scope whose owner is staff (a
key never has more rights than its owner).

Streamed, never built in memory: conversations are read with ``.iterator(chunk_size=...)``
(a server-side cursor on PostgreSQL; messages and feedback prefetched per chunk), each
conversation becomes one JSON line (or one CSV row per message) as it is read. Django
buffers a *synchronous* iterator whole under ASGI (``StreamingHttpResponse`` lists it), so
the response gets an asynchronous iterator that pulls a batch of lines at a time from the
database in the request's thread.

What is left out on purpose: anonymous users' session keys (a credential) and the users'
names; ``user_id`` identifies a signed-in user for operators who may look them up.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from chat.errors import PermissionDenied
from chat.gateway.auth import APIKeyAuthentication, Principal
from chat.gateway.models import SCOPE_EXPORT
from chat.models import Conversation, Feedback, Message

CHUNK_SIZE = 200  # conversations per database round trip (their messages and feedback: one query each)
LINES_PER_WRITE = 50  # lines handed to the server per batch
DEFAULT_DAYS = 30

CSV_COLUMNS = [
    "conversation_id", "conversation_created_at", "channel", "user_id", "anonymous", "title", "collection_ids",
    "message_id", "role", "created_at", "status", "error_code", "superseded", "content", "model", "prompt_tokens",
    "completion_tokens", "ttft_ms", "total_ms", "cached", "citations", "cited_document_ids", "feedback_up",
    "feedback_down", "feedback_comments",
]  # fmt: skip


# --- reads ------------------------------------------------------------------------------


def conversations_for_export(*, since: dt.datetime, until: dt.datetime) -> QuerySet[Conversation]:
    """Conversations started in [since, until), oldest first, with messages (oldest first) and feedback."""
    messages = Message.objects.order_by("created_at", "id").prefetch_related(
        Prefetch("feedback", queryset=Feedback.objects.order_by("created_at", "id"))
    )
    return (
        Conversation.objects.filter(created_at__gte=since, created_at__lt=until)
        .order_by("created_at", "id")
        .prefetch_related(Prefetch("messages", queryset=messages))
    )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _feedback(message: Message) -> list[dict[str, Any]]:
    return [
        {"rating": f.rating, "comment": f.comment, "created_at": _iso(f.created_at), "updated_at": _iso(f.updated_at)}
        for f in message.feedback.all()
    ]


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "role": message.role,
        "created_at": _iso(message.created_at),
        "status": message.status,
        "error_code": message.error_code,
        "superseded": message.superseded,
        "content": message.content,
        "model": message.model,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "ttft_ms": message.ttft_ms,
        "total_ms": message.total_ms,
        "cached": message.cached,
        "citations": message.citations or [],
        "feedback": _feedback(message),
    }


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    """One conversation as exported (the JSONL line)."""
    return {
        "id": str(conversation.pk),
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "channel": conversation.channel,
        "user_id": conversation.user_id,
        "anonymous": conversation.user_id is None,
        "title": conversation.title,
        "collection_ids": conversation.collection_ids or [],
        "model": conversation.model,
        "messages": [_message(m) for m in conversation.messages.all()],
    }


def jsonl_lines(conversations: QuerySet[Conversation]) -> Iterator[bytes]:
    for conversation in conversations.iterator(chunk_size=CHUNK_SIZE):
        yield orjson.dumps(conversation_record(conversation)) + b"\n"


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a leading '.

    Users' messages come from the public internet; an operator opening the file in a
    spreadsheet must not execute a formula one of them typed (CSV injection).
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_lines(conversations: QuerySet[Conversation]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> bytes:
        data = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return data

    # A BOM so that spreadsheet programs read the Korean text as UTF-8.
    writer.writerow(CSV_COLUMNS)
    yield b"\xef\xbb\xbf" + flush()
    for conversation in conversations.iterator(chunk_size=CHUNK_SIZE):
        record = conversation_record(conversation)
        for message in record["messages"]:
            feedback = message["feedback"]
            row = [
                record["id"], record["created_at"], record["channel"], record["user_id"], record["anonymous"],
                record["title"], orjson.dumps(record["collection_ids"]).decode(), message["id"], message["role"],
                message["created_at"], message["status"], message["error_code"], message["superseded"],
                message["content"], message["model"], message["prompt_tokens"], message["completion_tokens"],
                message["ttft_ms"], message["total_ms"], message["cached"], orjson.dumps(message["citations"]).decode(),
                " ".join(str(c.get("document_id")) for c in message["citations"] if isinstance(c, dict) and c.get("cited")),
                sum(f["rating"] == "up" for f in feedback), sum(f["rating"] == "down" for f in feedback),
                orjson.dumps([f["comment"] for f in feedback if f["comment"]]).decode(),
            ]  # fmt: skip
            writer.writerow([_cell(v) for v in row])
        yield flush()


async def streamed(lines: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull ``lines`` (a database-reading generator) a batch at a time in the request's thread.

    ``thread_sensitive``: the same thread that ran the view, so the server-side cursor and
    the connection it lives on stay where Django expects them.
    """
    next_batch = sync_to_async(lambda: b"".join(islice(lines, LINES_PER_WRITE)), thread_sensitive=True)
    while chunk := await next_batch():
        yield chunk


# --- the view --------------------------------------------------------------------------------


class ExportQuery(serializers.Serializer):
    output = serializers.ChoiceField(choices=["jsonl", "csv"], default="jsonl", help_text="File format.")
    since = serializers.DateTimeField(
        required=False, help_text=f"Conversations started at or after this time (default: {DEFAULT_DAYS} days ago)."
    )
    until = serializers.DateTimeField(required=False, help_text="...and before this time (default: now).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs.setdefault("until", timezone.now())
        attrs.setdefault("since", attrs["until"] - dt.timedelta(days=DEFAULT_DAYS))
        if attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"since": ["must be before until"]})
        return attrs


class CanExport(BasePermission):
    """Staff sessions; API keys with the ``export`` scope whose owner is staff."""

    message = "Exports are for staff: sign in as staff, or send an API key with the export scope."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if isinstance(request.auth, Principal) and not request.auth.has_scopes(SCOPE_EXPORT):
            raise PermissionDenied(
                f"This API key lacks the scope {SCOPE_EXPORT!r}; ask an operator for a key that has it.",
                reason="missing_scope",
                scope=SCOPE_EXPORT,
            )
        if not user.is_staff:
            raise PermissionDenied("Exports are for staff (an API key has its owner's rights).")
        return True


class JSONOnly(BaseContentNegotiation):
    """Errors are JSON whatever the client accepts (the export itself is streamed, not rendered)."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


ExportError = inline_serializer(
    "ExportError",
    {
        "error": inline_serializer(
            "ExportErrorBody",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "fields": serializers.DictField(required=False),
                "reason": serializers.CharField(required=False),
                "scope": serializers.CharField(required=False),
            },
        )
    },
)


class ConversationExportView(APIView):
    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [CanExport]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnly

    @extend_schema(
        tags=["exports"],
        summary="Export conversations with messages, citations and feedback (JSONL or CSV, streamed)",
        description=(
            "Conversations started in [`since`, `until`) (default: the last 30 days), oldest first. "
            "`output=jsonl`: one JSON object per conversation with its `messages` (each with `citations` and "
            "`feedback`). `output=csv`: one row per message, the conversation's columns repeated, citations as "
            "JSON; cells starting with = + - @ are prefixed with ' (spreadsheet formula injection).\n\n"
            "Staff sessions, or an API key with the `export` scope whose owner is staff."
        ),
        parameters=[ExportQuery],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON lines."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV with a header row."),
            400: ExportError,
            401: ExportError,
            403: ExportError,
        },
        extensions={"x-required-scopes": [SCOPE_EXPORT]},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = ExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        conversations = conversations_for_export(since=params["since"], until=params["until"])
        stamp = f"{params['since']:%Y%m%d}-{params['until']:%Y%m%d}"
        if params["output"] == "csv":
            lines, content_type, extension = csv_lines(conversations), "text/csv; charset=utf-8", "csv"
        else:
            lines, content_type, extension = jsonl_lines(conversations), "application/x-ndjson", "jsonl"
        response = StreamingHttpResponse(streamed(lines), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{extension}"'
        response["Cache-Control"] = "no-store"
        return response
