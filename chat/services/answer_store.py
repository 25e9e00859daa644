"""The SQL steps of an answer: store the question and an empty answer row first, fill it at the end.

Every answer pays for ``store_start`` and ``store_finish``, so they are kept to the
fewest round trips (each ORM statement costs about a millisecond of CPU here). They
are synchronous and run off the event loop (``chat.asyncdb.db``), never in the token loop.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from chat import selectors
from chat.errors import NotFound, PlatformError
from chat.models import Conversation, Message
from chat.services.conversations import conversation_create
from chat.types import Owner

TITLE_CHARS = 80


@dataclass(slots=True)
class Stored:
    """The rows an answer writes to: its conversation, the answer and (unless regenerating) the question."""

    conversation_id: uuid.UUID
    message_id: int
    user_message_id: int | None
    new_conversation: bool
    # What the conversation row says now: the final write touches it only when these change.
    model: str = ""
    endpoint: str = ""


@dataclass(slots=True)
class Outcome:
    """How an answer ended: what ``store_finish`` writes and the ``End`` event reports."""

    status: str
    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    endpoint: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: int | None = None
    total_ms: int | None = None
    cached: bool = False
    error: PlatformError | None = None
    # The lengths of the pieces the model's answer was streamed in (the response cache keeps
    # them so a replay sends the same chunks); None: not streamed from the model.
    chunks: list[int] | None = None


def title_of(question: str) -> str:
    first = " ".join(question.split())
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"


def store_start(
    *,
    owner: Owner,
    conversation: Conversation | None,
    question: str,
    regenerate: bool,
    channel: str,
    collection_ids: list[int],
) -> Stored:
    """Store the question and an empty answer row before anything is generated.

    A question in a conversation is one UPDATE of the conversation and one INSERT of both
    messages, without a transaction (if the INSERT failed, the conversation's updated_at
    moved, nothing else).
    """
    new = conversation is None
    with transaction.atomic() if new or regenerate else contextlib.nullcontext():
        if conversation is None:
            conversation = conversation_create(
                owner=owner, title=title_of(question), channel=channel, collection_ids=collection_ids
            )
            cid = conversation.pk
        else:
            cid = conversation.pk
            # Touch the conversation and title it if it has no title yet, in one statement.
            updated = Conversation.objects.filter(pk=cid).update(
                updated_at=timezone.now(),
                title=Case(When(title="", then=Value(title_of(question))), default=F("title")),
            )
            if not updated:
                raise NotFound("No such conversation.")
        user_message_id = None
        if regenerate:
            last_user = (
                Message.objects.filter(conversation_id=cid, role=Message.Role.USER)
                .order_by("-created_at", "-id")
                .first()
            )
            if last_user is not None:
                Message.objects.filter(
                    conversation_id=cid, role=Message.Role.ASSISTANT, superseded=False, id__gt=last_user.pk
                ).update(superseded=True)
            answer = Message.objects.create(
                conversation_id=cid, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
            )
        else:
            # One INSERT; the ids come back in order (question first, as created_at and id sort).
            try:
                question_row, answer = Message.objects.bulk_create(
                    [
                        Message(conversation_id=cid, role=Message.Role.USER, content=question),
                        Message(conversation_id=cid, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING),
                    ]
                )
            except IntegrityError:  # the conversation was deleted since the UPDATE above
                raise NotFound("No such conversation.") from None
            user_message_id = question_row.pk
    return Stored(
        conversation_id=cid,
        message_id=answer.pk,
        user_message_id=user_message_id,
        new_conversation=new,
        model=conversation.model,
        endpoint=conversation.endpoint,
    )


def store_finish(stored: Stored, outcome: Outcome) -> None:
    """The answer row, in one UPDATE; the conversation row only when its model or endpoint changed.

    The conversation's ``updated_at`` was set when the question was stored.
    """
    changes: dict[str, Any] = {}
    if outcome.model and outcome.model[:200] != stored.model:
        changes["model"] = outcome.model[:200]
    if outcome.endpoint and outcome.endpoint[:200] != stored.endpoint:
        changes["endpoint"] = outcome.endpoint[:200]
    with transaction.atomic() if changes else contextlib.nullcontext():
        Message.objects.filter(pk=stored.message_id).update(
            content=outcome.content,
            status=outcome.status,
            error_code=outcome.error.code if outcome.error else "",
            citations=outcome.citations,
            model=outcome.model[:200],
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            ttft_ms=outcome.ttft_ms,
            total_ms=outcome.total_ms,
            cached=outcome.cached,
        )
        if changes:
            Conversation.objects.filter(pk=stored.conversation_id).update(**changes, updated_at=timezone.now())


def turns_for_regenerate(conversation_id: uuid.UUID) -> list[dict[str, str]]:
    return selectors.recent_turns(conversation_id=conversation_id, limit=settings.CHAT_HISTORY_MAX_MESSAGES)
