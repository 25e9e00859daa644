"""Recent conversation history: Redis first, PostgreSQL on a miss.

``history:{conversation_id}`` is a Redis List of JSON messages (``{"id", "role",
"content"}``), oldest first, capped at CHAT_HISTORY_MAX_MESSAGES, expiring
CHAT_HISTORY_TTL_S after the last write. PostgreSQL stays the source of truth:
a miss (expired, evicted, Redis down or not configured) reads the database and
refills the list. Every write is one pipeline. A Redis failure degrades to the
database; it never fails a chat. While Redis is known down (``config.redis.REDIS_OUTAGE``)
it is not asked at all, and the outage is logged once per interval, not per message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import orjson
from django.conf import settings

from chat import selectors
from chat.asyncdb import db
from chat.prompt import Turn
from config.redis import REDIS_OUTAGE, get_redis, key, redis_enabled

log = logging.getLogger(__name__)


def history_key(conversation_id: uuid.UUID | str) -> str:
    return key("history", conversation_id)


def _turns(items: list[dict]) -> list[Turn]:
    return [Turn(i["role"], i["content"]) for i in items if i.get("content")]


# Conversations whose list missed a write while Redis was down: if Redis kept its data, the
# list is now incomplete, so it is deleted at the next contact (the next read refills it).
_missed: set[str] = set()
MAX_MISSED = 10_000


def _redis_usable() -> bool:
    return redis_enabled() and REDIS_OUTAGE.admit(probe_window=settings.REDIS_TIMEOUT * 2)


def _missed_write(conversation_id: uuid.UUID | str) -> None:
    if len(_missed) < MAX_MISSED:
        _missed.add(history_key(conversation_id))


async def _forget_missed() -> None:
    """Delete the lists that missed writes (called once Redis answers again)."""
    keys = list(_missed)
    _missed.clear()
    try:
        await asyncio.wait_for(get_redis().delete(*keys), _deadline())
    except Exception as exc:
        REDIS_OUTAGE.failed(exc)
        _missed.update(keys)


async def load_history(conversation_id: uuid.UUID) -> list[Turn]:
    """The conversation's recent turns, oldest first."""
    if _redis_usable():
        try:
            raw = await asyncio.wait_for(get_redis().lrange(history_key(conversation_id), 0, -1), _deadline())
        except Exception as exc:  # Redis is a cache here: fall back to the database
            REDIS_OUTAGE.failed(exc)
            return _turns(await db(_from_db)(conversation_id))
        REDIS_OUTAGE.succeeded()
        if _missed:
            stale = history_key(conversation_id) in _missed
            await _forget_missed()
            raw = [] if stale else raw
        if raw:
            return _turns([orjson.loads(item) for item in raw])
    rows = await db(_from_db)(conversation_id)
    if rows and redis_enabled():
        await _write(conversation_id, rows, replace=True)
    return _turns(rows)


def _deadline() -> float:
    # Connect + command, each bounded by REDIS_TIMEOUT in the client; this bounds the whole exchange.
    return settings.REDIS_TIMEOUT * 2


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
    if not _redis_usable():
        _missed_write(conversation_id)
        return
    try:
        await asyncio.wait_for(get_redis().delete(history_key(conversation_id)), _deadline())
    except Exception as exc:
        REDIS_OUTAGE.failed(exc)
        _missed_write(conversation_id)


async def _write(conversation_id: uuid.UUID, items: list[dict], *, replace: bool, create: bool = True) -> None:
    if not items:
        return
    if not _redis_usable():
        _missed_write(conversation_id)
        return
    if _missed:
        await _forget_missed()
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
        await asyncio.wait_for(pipe.execute(), _deadline())
    except Exception as exc:
        REDIS_OUTAGE.failed(exc)
        _missed_write(conversation_id)
    else:
        REDIS_OUTAGE.succeeded()
