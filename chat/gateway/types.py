"""Value types of the gateway's contract with the chat pipeline (a leaf: imports no gateway module).

``Subject`` is who asks (what limits and cache keys are keyed on), ``Admission`` the
answer of ``admit`` (allowed or refused, with the limit headers, and a cached answer
on a hit), ``CachedAnswer`` what the response cache stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: what the limiter and the cache key on."""

    user_id: int | None = None
    api_key_id: int | None = None
    api_key_policy_id: int | None = None  # a per-key rate-limit policy, if any
    ip: str = ""
    session_key: str | None = None
    is_anonymous: bool = False
    # Non-empty: the API key's revocation check was deferred to admit() (the key's prefix).
    revocation_prefix: str = ""


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
    # Which budget refused: "requests", "tokens" or "concurrency".
    reason: str | None = None
    # The index generation read with the cache lookup: what cache_put records on a new entry.
    cache_generation: int | None = None

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

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (at least 1), as in the Retry-After header."""
        return max(1, round((self.retry_after_s or 1) + 0.499))

    def as_error(self) -> RateLimited:
        """The refusal as the platform error (every renderer turns it into its 429 shape)."""
        what = {"tokens": "token budget", "concurrency": "concurrent-request limit"}.get(self.reason or "", "limit")
        return RateLimited(
            f"Rate {what} reached ({self.scope}); retry in {self.retry_after} s.",
            headers=self.headers(),
            scope=self.scope,
            reason=self.reason,
            retry_after=self.retry_after,
            limit=self.limit,
            remaining=max(self.remaining or 0, 0),
            reset=round(self.reset_s or 0),
        )
