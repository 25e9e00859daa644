"""The index generation: one number that changes whenever what retrieval can return changes.

The response cache (chat.gateway) keys answers on the question and the collections asked,
not on the chunks retrieved (the lookup happens before retrieval, in the request's one
Redis round trip). So each cached answer records the generation it was made at, the
lookup reads the current one in the same round trip, and an answer made before a
document was deleted, replaced or hidden is never served again (docs/security.md).

``index_generation_advance`` runs after the change is committed and visible to search:
a request admitted before it may still have retrieved the old text, so its answer carries
the old generation; one admitted after it cannot. Listeners (the gateway's purge of the
stale entries) run right after.

Values only grow: the next one is at least the current time in milliseconds, so a
generation key lost from Redis (eviction, flush) never comes back to a value an old entry
still carries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from config.redis import key, sync_redis

log = logging.getLogger(__name__)

# KEYS: 1 the generation. ARGV: 1 now in ms. Returns the new generation.
ADVANCE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local nxt = math.max(current + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], nxt)
return nxt
"""

_listeners: list[Callable[[], None]] = []


def generation_key() -> str:
    return key("knowledge", "generation")


def on_index_change(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after each advance (the gateway registers its cache purge; idempotent)."""
    if listener not in _listeners:
        _listeners.append(listener)


def index_generation_advance(*, reason: str) -> None:
    """Advance the generation once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _advance(reason))


def _advance(reason: str) -> None:
    if settings.REDIS_URL:
        try:
            with sync_redis() as r:
                value = r.eval(ADVANCE_SCRIPT, 1, generation_key(), int(time.time() * 1000))
            log.info("index generation %s (%s)", value, reason)
        except Exception:
            # Cached answers made before the change stay servable until their TTL: say so loudly.
            log.error("could not advance the index generation (%s); cached answers may be stale", reason, exc_info=True)
    for listener in list(_listeners):
        try:
            listener()
        except Exception:
            log.exception("index change listener %r failed", listener)
