"""Reads of conversations and messages. Every read is scoped to its owner.

Someone else's conversation is indistinguishable from a missing one (404), so
ids cannot be probed.
"""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet

from chat.models import Conversation, Feedback, Message
from chat.types import Owner


def _owner_q(owner: Owner, prefix: str = "") -> Q:
    """Rows owned by ``owner``; ``prefix`` reaches the conversation through a relation."""
    if owner.user_id is not None:
        return Q(**{f"{prefix}user_id": owner.user_id})
    if owner.session_key:
        return Q(**{f"{prefix}user__isnull": True, f"{prefix}session_key": owner.session_key})
    return Q(pk__in=[])


def conversation_list(*, owner: Owner) -> QuerySet[Conversation]:
    return Conversation.objects.filter(_owner_q(owner)).order_by("-updated_at")


def conversation_get(*, owner: Owner, conversation_id: uuid.UUID | str) -> Conversation | None:
    try:
        cid = conversation_id if isinstance(conversation_id, uuid.UUID) else uuid.UUID(str(conversation_id))
    except ValueError:
        return None
    return Conversation.objects.filter(_owner_q(owner), pk=cid).first()


def message_list(*, conversation: Conversation, include_superseded: bool = False) -> QuerySet[Message]:
    qs = conversation.messages.all()
    if not include_superseded:
        qs = qs.filter(superseded=False)
    return qs.order_by("created_at", "id")


def message_get(*, owner: Owner, message_id: int) -> Message | None:
    return Message.objects.filter(_owner_q(owner, "conversation__"), pk=message_id).first()


def recent_turns(*, conversation_id: uuid.UUID, limit: int) -> list[dict[str, str]]:
    """The last ``limit`` messages worth sending back to the model, oldest first.

    Superseded answers and empty (failed) answers are left out.
    """
    rows = list(
        Message.objects.filter(conversation_id=conversation_id, superseded=False)
        .exclude(content="")
        .order_by("-created_at", "-id")
        .values("id", "role", "content")[:limit]
    )
    rows.reverse()
    return rows


def feedback_for(*, owner: Owner, message_ids: list[int]) -> dict[int, str]:
    """The owner's rating of each of these messages (to show the pressed thumb)."""
    qs = Feedback.objects.filter(message_id__in=message_ids)
    if owner.user_id is not None:
        qs = qs.filter(user_id=owner.user_id)
    else:
        qs = qs.filter(user__isnull=True, session_key=owner.session_key or "")
    return dict(qs.values_list("message_id", "rating"))
