"""The response cache's writes and its key: what ``admit`` looks up, ``cache_put`` stores.

Entries are exact-match: a key covers the model, the messages as sent, the retrieved
context and every answer-shaping parameter (``cache_key_for``). Only complete answers
generated at or below RESPONSE_CACHE_MAX_TEMPERATURE are stored. The key scheme and the
encoding are in ``chat.gateway.cache``; the lookup rides in ``admit``'s round trip.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from chat.gateway import cache
from chat.gateway.redis_async import REDIS_ERRORS, redis_call
from chat.gateway.services.admission import redis_usable
from chat.gateway.services.redis_admin import keys_purge_prefix
from chat.gateway.types import CachedAnswer, Subject
from config.local_cache import MISSING
from config.redis import glob_escape, sync_redis
from knowledge.services.generation import generation_key

log = logging.getLogger(__name__)


def cache_key_for(
    *,
    subject: Subject,
    model: str,
    messages: list[dict[str, str]],
    context_ids: list[int],
    params: dict[str, Any],
    private_context: bool = False,
) -> str | None:
    """The response-cache key for a request, or None when its answer is not reusable.

    Reusable: caching enabled, temperature (or RESPONSE_CACHE_DEFAULT_TEMPERATURE when
    unset) at most RESPONSE_CACHE_MAX_TEMPERATURE, n == 1. ``messages`` are the messages
    as sent to the model (system prompt included), ``context_ids`` the retrieved chunks in
    prompt order. ``private_context``: the context holds the user's own data, so the key
    includes the user id (never shared across users); anonymous requests then get None.
    """
    if not settings.RESPONSE_CACHE_ENABLED:
        return None
    temperature = params.get("temperature")
    if temperature is None:
        temperature = settings.RESPONSE_CACHE_DEFAULT_TEMPERATURE
    if temperature > settings.RESPONSE_CACHE_MAX_TEMPERATURE or params.get("n", 1) != 1:
        return None
    owner = None
    if private_context:
        if subject.user_id is None or subject.is_anonymous:
            return None
        owner = subject.user_id
    return cache.entry_key(
        cache.digest(
            {
                "v": 1,
                "model": model,
                "messages": [{"role": m.get("role"), "content": m.get("content")} for m in messages],
                "context": list(context_ids),
                "params": {k: v for k, v in params.items() if k not in cache.NON_ANSWER_PARAMS and v is not None},
                "owner": owner,
            }
        )
    )


async def cache_ttl() -> int:
    """The entry TTL: the admin's override (Redis-held, shared) or RESPONSE_CACHE_TTL."""
    override = cache.ttl_override.get(cache.TTL_OVERRIDE)
    if override is MISSING:
        override = None
        try:
            raw = await redis_call(lambda r: r.hget(cache.config_key(), "response_cache_ttl"))
            override = cache.clamp_ttl(int(raw)) if raw else None
        except (*REDIS_ERRORS, ValueError):
            pass
        cache.ttl_override.set(cache.TTL_OVERRIDE, override)
    return override or settings.RESPONSE_CACHE_TTL


CURRENT = -1  # cache_put's default: the generation as Redis holds it now (callers without an admission)


async def cache_put(
    cache_key: str, answer: CachedAnswer, *, generation: int | None = CURRENT, ttl: int | None = None
) -> None:
    """Store a final answer (complete answers only). Never raises; a failed write is a future miss.

    ``generation``: the index generation ``admit`` read (``Admission.cache_generation``), so the
    entry is served only while no document changed since its sources were retrieved. None (no
    generation in Redis yet): the generation is started here, and the entry stored at it only
    when this call started it (had a document changed since ``admit``, the change would have
    made the generation first: the entry is then dropped). Left out (tests, tools): the current
    one. ``ttl`` (seconds) overrides the configured TTL.
    """
    if not cache_key or not settings.RESPONSE_CACHE_ENABLED or not answer.content or not redis_usable():
        return
    try:
        if generation is None or generation == CURRENT:
            created, started = await redis_call(lambda r: _start_generation(r))
            if started is None or (generation is None and not created):
                return
            generation = started
        seconds = ttl or await cache_ttl()
        members = cache.generation_set_key(generation)

        async def write(r: Any) -> None:
            # One round trip (after the answer, off its path): the entry and its generation's list.
            pipe = r.pipeline(transaction=False)
            pipe.set(cache_key, cache.encode(answer, generation), ex=seconds)
            pipe.sadd(members, cache_key)
            pipe.expire(members, cache.TTL_MAX_S + 60)
            await pipe.execute()

        await redis_call(write)
    except REDIS_ERRORS as exc:
        log.warning("response cache write failed (%s: %s)", type(exc).__name__, exc)


async def _start_generation(r: Any) -> tuple[bool, int | None]:
    """Whether this call set the generation (to now, in ms, when Redis had none), and the current one."""
    pipe = r.pipeline(transaction=False)
    pipe.set(generation_key(), int(time.time() * 1000), nx=True)
    pipe.get(generation_key())
    created, current = await pipe.execute()
    return bool(created), cache.current_generation(current)


def cache_purge_stale(*, batch: int = 500) -> int:
    """Unlink the entries of every generation older than the current one (run after each index change).

    They can no longer be served (``admit`` compares generations); this takes the text of
    deleted or hidden documents out of Redis now rather than at the entries' TTL. Returns how
    many entries were removed. Never raises (a failure leaves them to expire).
    """
    if not settings.REDIS_URL:
        return 0
    removed = 0
    try:
        with sync_redis() as r:
            current = cache.current_generation(r.get(generation_key()))
            if current is None:
                return 0
            lists = [k for k in r.scan_iter(match=glob_escape(cache.generation_set_key("")) + "*", count=1000)]
            for list_key in lists:
                name = list_key.decode() if isinstance(list_key, bytes) else str(list_key)
                generation = cache.current_generation(name.rsplit(":", 1)[-1])
                if generation is None or generation >= current:
                    continue
                pending: list[Any] = []
                for entry in r.sscan_iter(list_key, count=batch):
                    pending.append(entry)
                    if len(pending) >= batch:
                        removed += _unlink_each(r, pending)
                        pending = []
                removed += _unlink_each(r, pending)
                r.unlink(list_key)
    except (*REDIS_ERRORS, RuntimeError) as exc:
        log.warning("stale response cache entries not purged (%s: %s)", type(exc).__name__, exc)
    return removed


def _unlink_each(r: Any, keys: list[Any]) -> int:
    # One UNLINK per key in a pipeline: entries hash to different cluster slots.
    if not keys:
        return 0
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.unlink(k)
    return sum(int(n or 0) for n in pipe.execute())


# --- operator actions (synchronous: admin views, management commands) -----------------------


def cache_delete(*, entry_key: str) -> bool:
    """Delete one response-cache entry (full key or digest)."""
    k = entry_key.strip()
    if not k.startswith(cache.prefix()):
        k = cache.entry_key(k)
    with sync_redis() as r:
        return bool(r.unlink(k))


def cache_flush() -> int:
    """Delete every response-cache entry (the namespace), keeping the hit/lookup counters."""
    return keys_purge_prefix(prefix="chat:response:")


def cache_stats_reset() -> None:
    with sync_redis() as r:
        r.unlink(cache.stats_key())


def cache_ttl_set(*, seconds: int | None) -> int:
    """Set (or with None, clear) the shared TTL override for new entries; returns the TTL in force.

    Other processes pick it up within GATEWAY_POLICY_CACHE_S. Existing entries keep theirs.
    """
    with sync_redis() as r:
        if seconds is None:
            r.hdel(cache.config_key(), "response_cache_ttl")
        else:
            seconds = cache.clamp_ttl(seconds)
            r.hset(cache.config_key(), "response_cache_ttl", seconds)
    cache.forget_ttl_override()
    return seconds or settings.RESPONSE_CACHE_TTL
