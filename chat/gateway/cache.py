"""Response cache: key scheme, (de)serialisation, and the Redis-held TTL override.

Entries are ``vh:chat:response:<sha256>`` -> JSON of a CachedAnswer, with a TTL, and the
index generation it was made at (``gen``: served only while the generation is the same,
``knowledge.services.generation``); ``vh:chat:cachegen:<generation>`` lists each
generation's entries so that a purge removes the stale ones. The
hit/lookup counters live in one Redis hash (``vh:gateway:cache_stats``) so every replica
contributes to the hit rate the admin page shows.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import orjson
from django.conf import settings

from config.local_cache import LocalCache
from config.redis import key

# Generation parameters that do not change the answer's text: left out of the key.
NON_ANSWER_PARAMS = frozenset({"stream", "stream_options", "include_usage", "user", "n"})

TTL_MIN_S = 3600
TTL_MAX_S = 86400


def prefix() -> str:
    """Every entry's key starts with this (the platform namespace included)."""
    return key("chat", "response") + ":"


def entry_key(digest: str) -> str:
    return key("chat", "response", digest)


def stats_key() -> str:
    return key("gateway", "cache_stats")


def config_key() -> str:
    return key("gateway", "config")


def generation_set_key(generation: int) -> str:
    """The entries stored at one index generation (what a purge of older generations unlinks)."""
    return key("chat", "cachegen", generation)


def current_generation(raw: bytes | str | None) -> int | None:
    """The index generation as read from Redis (None: not set yet, the cache is bypassed)."""
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def fresh(data: dict[str, Any], generation: int | None) -> bool:
    """An entry may be served only at the index generation it was made at (docs/security.md)."""
    return generation is not None and data.get("gen") == generation


def digest(payload: dict[str, Any]) -> str:
    """sha256 of a canonical JSON encoding (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# Entry format. 1 (no "v" field): the answer's text and its facts. 2: adds "chunks", the
# lengths (in characters) of the pieces the answer was streamed in, so that a replay sends
# the same chunks; absent when the answer was not streamed (a replay then uses fixed-size
# pieces, as for a version-1 entry). Readers accept both.
FORMAT = 2


def encode(answer: Any, generation: int | None = None) -> bytes:
    data: dict[str, Any] = {
        "v": FORMAT,
        "gen": generation,
        "content": answer.content,
        "citations": answer.citations,
        "model": answer.model,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "cached_at": time.time(),
    }
    if answer.chunks is not None:
        data["chunks"] = list(answer.chunks)
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)  # int keys become strings, as json.dumps did


def decode(raw: bytes | str) -> dict[str, Any] | None:
    """The stored fields, or None for a corrupt entry (treated as a miss)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("content"), str):
        return None
    return data


def chunks_of(data: dict[str, Any]) -> tuple[int, ...] | None:
    """The stored chunk lengths of an entry, or None: not recorded (format 1, a whole answer) or
    not matching its text (then the replay falls back to fixed-size pieces rather than fail)."""
    chunks = data.get("chunks")
    if not isinstance(chunks, list) or not chunks:
        return None
    if not all(type(n) is int and n >= 0 for n in chunks) or sum(chunks) != len(data["content"]):
        return None
    return tuple(chunks)


def clamp_ttl(seconds: int) -> int:
    return max(TTL_MIN_S, min(TTL_MAX_S, int(seconds)))


# The admin's TTL override (a field of the config hash), cached per process briefly so
# cache_put costs one round trip, not two. None: no override.
ttl_override: LocalCache[str, int | None] = LocalCache(
    "response_cache_ttl", ttl=lambda: settings.GATEWAY_POLICY_CACHE_S, maxsize=1
)
TTL_OVERRIDE = "ttl"


def forget_ttl_override() -> None:
    ttl_override.clear()
