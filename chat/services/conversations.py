"""Conversations and feedback: the plain writes behind the REST API (no model call)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import IntegrityError, transaction

from chat import selectors
from chat.errors import AuthenticationRequired, InternalError, NotFound, ValidationFailed
from chat.models import Conversation, Feedback, Message
from chat.types import Owner


def conversation_create(*, owner: Owner, title: str = "", channel: str = Conversation.Channel.WEB,
                        collection_ids: Sequence[int] = ()) -> Conversation:  # fmt: skip
    if not owner.is_known:
        raise AuthenticationRequired()
    return Conversation.objects.create(
        user_id=owner.user_id,
        session_key="" if owner.user_id is not None else owner.session_key,
        title=title[:200],
        channel=channel,
        collection_ids=list(collection_ids),
    )


def conversation_delete(*, owner: Owner, conversation_id: uuid.UUID | str) -> uuid.UUID:
    conversation = selectors.conversation_get(owner=owner, conversation_id=conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    cid = conversation.pk
    conversation.delete()
    return cid


def feedback_set(*, owner: Owner, message_id: int, rating: str, comment: str = "") -> Feedback:
    """Rate an answer; a second call by the same person updates the first."""
    if rating not in Feedback.Rating.values:
        raise ValidationFailed("Rating must be up or down.", fields={"rating": ["Must be up or down."]})
    message = selectors.message_get(owner=owner, message_id=message_id)
    if message is None or message.role != Message.Role.ASSISTANT:
        raise NotFound("No such answer.")
    who = {"user_id": owner.user_id} if owner.user_id is not None else {"user": None, "session_key": owner.session_key}
    for _attempt in range(2):  # a concurrent first vote may win the insert: then update it
        try:
            with transaction.atomic():
                feedback, _ = Feedback.objects.update_or_create(
                    message=message, **who, defaults={"rating": rating, "comment": comment[:2000]}
                )
            return feedback
        except IntegrityError:
            continue
    raise InternalError("Could not store the feedback.")
