"""Gateway controls' contract with the chat pipeline.

PROVISIONAL: pass-through bodies (everything admitted, nothing cached). The
gateway implementation replaces them with the Redis-backed limiter and cache;
the chat service codes against these names and types only.

Hot-path rule: ``admit`` does the rate-limit check-and-add AND the response
cache lookup in ONE Redis round trip (a pipeline / one Lua call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: what the limiter and the cache key on."""

    user_id: int | None = None
    api_key_id: int | None = None
    api_key_policy_id: int | None = None  # a per-key rate-limit policy, if any
    ip: str = ""
    session_key: str | None = None
    is_anonymous: bool = False


@dataclass(slots=True)
class CachedAnswer:
    """A reusable final answer (what the response cache stores)."""

    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class Admission:
    allowed: bool = True
    scope: str | None = None  # which limit refused (global, user, api_key, ip, anonymous)
    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None  # seconds until the window frees a slot
    retry_after_s: float | None = None
    cached: CachedAnswer | None = None
    # Opaque state settle() needs (e.g. the concurrency-slot member to release).
    token: Any = None

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* (and Retry-After when refused), for REST responses."""
        if self.limit is None:
            return {}
        h = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining or 0, 0)),
            "X-RateLimit-Reset": str(round(self.reset_s or 0)),
        }
        if not self.allowed and self.retry_after_s is not None:
            h["Retry-After"] = str(max(1, round(self.retry_after_s + 0.499)))
        return h


def cache_key_for(
    *,
    subject: Subject,
    model: str,
    messages: list[dict[str, str]],
    context_ids: list[int],
    params: dict[str, Any],
    private_context: bool = False,
) -> str | None:
    """The response-cache key for a request, or None when its answer is not reusable."""
    return None


async def admit(subject: Subject, *, cache_key: str | None) -> Admission:
    """Check-and-add the subject's rate limits and look up the cache, in one round trip."""
    return Admission()


async def settle(subject: Subject, admission: Admission, *, prompt_tokens: int, completion_tokens: int) -> None:
    """After the answer: charge token limits from actual usage, release the concurrency slot."""


async def cache_put(cache_key: str, answer: CachedAnswer) -> None:
    """Store a final answer (complete answers only)."""
