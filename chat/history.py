"""Recent conversation history: Redis first, PostgreSQL on a miss.

``history:{conversation_id}`` is a Redis List of JSON messages (``{"id", "role",
"content"}``), oldest first, capped at CHAT_HISTORY_MAX_MESSAGES, expiring
CHAT_HISTORY_TTL_S after the last write. PostgreSQL stays the source of truth:
a miss (expired, evicted, Redis down or not configured) reads the database and
refills the list. Every write is one pipeline. A Redis failure is logged and
degrades to the database; it never fails a chat.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from django.conf import settings

from chat import selectors
from chat.asyncdb import db
from chat.prompt import Turn
from config.redis import get_redis, key, redis_enabled

log = logging.getLogger(__name__)


def history_key(conversation_id: uuid.UUID | str) -> str:
    return key("history", conversation_id)


def _turns(items: list[dict]) -> list[Turn]:
    return [Turn(i["role"], i["content"]) for i in items if i.get("content")]


async def load_history(conversation_id: uuid.UUID) -> list[Turn]:
    """The conversation's recent turns, oldest first."""
    if redis_enabled():
        try:
            raw = await get_redis().lrange(history_key(conversation_id), 0, -1)
            if raw:
                return _turns([orjson.loads(item) for item in raw])
        except Exception as exc:  # Redis is a cache here: fall back to the database
            log.warning("history read from Redis failed (%s); using the database", exc)
            return _turns(await db(_from_db)(conversation_id))
    rows = await db(_from_db)(conversation_id)
    if rows and redis_enabled():
        await _write(conversation_id, rows, replace=True)
    return _turns(rows)


def _from_db(conversation_id: uuid.UUID) -> list[dict]:
    return selectors.recent_turns(conversation_id=conversation_id, limit=settings.CHAT_HISTORY_MAX_MESSAGES)


async def append_history(conversation_id: uuid.UUID, items: list[dict], *, new: bool) -> None:
    """Add messages after an answer. ``new``: the conversation had no history (create the list).

    For an existing conversation RPUSHX only extends a list that is still there: if it
    expired meanwhile, the next read refills it from the database instead of starting a
    list that would lack the older turns.
    """
    if redis_enabled() and items:
        await _write(conversation_id, [i for i in items if i.get("content")], replace=False, create=new)


async def drop_history(conversation_id: uuid.UUID) -> None:
    """Forget the cached list (after a regenerate or a delete): the next read refills it."""
    if not redis_enabled():
        return
    try:
        await get_redis().delete(history_key(conversation_id))
    except Exception as exc:
        log.warning("history delete in Redis failed: %s", exc)


async def _write(conversation_id: uuid.UUID, items: list[dict], *, replace: bool, create: bool = True) -> None:
    if not items:
        return
    k = history_key(conversation_id)
    payload = [orjson.dumps({"id": i.get("id"), "role": i["role"], "content": i["content"]}) for i in items]
    try:
        pipe = get_redis().pipeline(transaction=True)
        if replace:
            pipe.delete(k)
        if replace or create:
            pipe.rpush(k, *payload)
        else:
            pipe.rpushx(k, *payload)
        pipe.ltrim(k, -settings.CHAT_HISTORY_MAX_MESSAGES, -1)
        pipe.expire(k, settings.CHAT_HISTORY_TTL_S)
        await pipe.execute()
    except Exception as exc:
        log.warning("history write to Redis failed: %s", exc)
