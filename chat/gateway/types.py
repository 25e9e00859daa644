"""Value types of the gateway's contract with the chat pipeline (a leaf: imports no gateway module).

``Subject`` is who asks (what limits and cache keys are keyed on), ``Admission`` the
answer of ``admit`` (allowed or refused, with the limit and budget headers, and a cached
answer on a hit), ``CachedAnswer`` what the response cache stores, ``UsageRecord`` what
the caller tells ``settle`` for the usage counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat.errors import BudgetExceeded, RateLimited


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
    # API-key requests: the model-group ids the key may use (None: every model). A session
    # user's set is not carried here: chat.gateway.access loads it (cached) when needed.
    key_models: frozenset[int] | None = None


@dataclass(slots=True)
class CachedAnswer:
    """A reusable final answer (what the response cache stores)."""

    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The lengths (characters) of the pieces the answer was streamed in, so a replay sends the
    # same chunks; None: not known (a whole, non-streamed answer, or an entry of format 1).
    chunks: tuple[int, ...] | None = None


@dataclass(slots=True)
class UsageRecord:
    """What settle() adds to the usage counters for a request; the caller fills it before settle."""

    model: str = ""  # the model group that served it (admit sets the one asked for)
    error: bool = False
    latency_ms: int = 0


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
    # Which budget refused: "requests", "tokens", "concurrency" or "budget" (the monthly tokens).
    reason: str | None = None
    # The index generation read with the cache lookup: what cache_put records on a new entry.
    cache_generation: int | None = None
    # The tightest monthly token budget (None: no budget applies): size, tokens left, seconds to renewal.
    budget_limit: int | None = None
    budget_remaining: int | None = None
    budget_reset_s: float | None = None
    budget_model: str = ""  # the model of a per-model budget that refused
    # Refused by a limit or budget of the model asked for (not the caller's own): its fallbacks may serve.
    model_scoped: bool = False
    usage: UsageRecord = field(default_factory=UsageRecord)

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* and X-Budget-* (and Retry-After when refused), for REST responses."""
        h: dict[str, str] = {}
        if self.limit is not None:
            h["X-RateLimit-Limit"] = str(self.limit)
            h["X-RateLimit-Remaining"] = str(max(self.remaining or 0, 0))
            h["X-RateLimit-Reset"] = str(round(self.reset_s or 0))
        if self.budget_limit is not None:
            h["X-Budget-Limit"] = str(self.budget_limit)
            h["X-Budget-Remaining"] = str(max(self.budget_remaining or 0, 0))
            h["X-Budget-Reset"] = str(round(self.budget_reset_s or 0))
        if h and not self.allowed and self.retry_after_s is not None:
            h["Retry-After"] = str(max(1, round(self.retry_after_s + 0.499)))
        return h

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait (at least 1), as in the Retry-After header."""
        return max(1, round((self.retry_after_s or 1) + 0.499))

    def as_error(self) -> RateLimited:
        """The refusal as the platform error (every renderer turns it into its 429 shape)."""
        if self.reason == "budget":
            days = max(1, round((self.budget_reset_s or 0) / 86400))
            which = f"{self.scope}, model {self.budget_model}" if self.budget_model else self.scope
            return BudgetExceeded(
                f"The monthly token budget ({which}) is spent: {self.budget_limit} tokens; it renews in {days} day(s).",
                headers=self.headers(),
                scope=self.scope,
                reason="budget",
                retry_after=self.retry_after,
                limit=self.budget_limit,
                remaining=0,
                reset=round(self.budget_reset_s or 0),
            )
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
