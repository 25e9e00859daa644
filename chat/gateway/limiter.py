"""Sliding-window rate limiter shared by every app replica (Redis), with a per-process fallback.

Which limits apply to a request (``checks_for``):

- ``global``: every request, one key for the whole platform.
- ``api_key``: requests made with an API key: the key's own policy, else the scope default.
- ``user``: requests from a logged-in browser session (API-key requests are limited per key
  instead: a key is an integration's identity, with its own budget).
- ``anonymous`` + ``ip``: anonymous browser chat, per session and per IP address.
- a model's policies (``model_checks_for``): requests for one model group, counted apart
  (``key:7:m3``) by the scope's default policy for that model, on top of the above.

Each subject's limits (requests per window, tokens per sliding minute, concurrent
requests) are checked and recorded by ONE Lua script call on keys that share a Redis
Cluster hash slot (``vh:ratelimit:{user:42}:60``, ``...:tokens``, ``...:concurrency``).
The script reads the server's clock (TIME), so replicas with skewed clocks agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from django.conf import settings

from chat.asyncdb import db
from chat.gateway.scripts import CHECK_SHA, SCRIPTS, SETTLE_SHA, UNDO_SHA, USAGE_SHA
from config.local_cache import MISSING, LocalCache
from config.redis import glob_escape, key

log = logging.getLogger(__name__)

# The Lua scripts' SHAs (chat/gateway/scripts.py says what each takes and returns); re-exported.
__all__ = ["CHECK_SHA", "SCRIPTS", "SETTLE_SHA", "UNDO_SHA", "USAGE_SHA"]

REASONS = {1: "requests", 2: "tokens", 3: "concurrency"}
SCOPES = ("global", "user", "api_key", "ip", "anonymous")


@dataclass(frozen=True, slots=True)
class Policy:
    id: int | None
    name: str
    scope: str
    requests: int
    window_s: int
    tokens_per_minute: int = 0
    concurrent: int = 0
    model_id: int | None = None  # a model group's policy (its requests only)


@dataclass(frozen=True, slots=True)
class Check:
    """One subject's limits for one request."""

    scope: str
    subject: str  # "global", "user:42", "key:7", "ip:10.0.0.1", "anon:<session>"
    policy: Policy

    @property
    def keys(self) -> tuple[str, str, str, str]:
        return subject_keys(self.subject, self.policy.window_s)


def subject_keys(subject: str, window_s: int) -> tuple[str, str, str, str]:
    """Request-window, token-charge, concurrency and token-sum keys.

    The {hash tag} puts one subject's keys in one Redis Cluster slot, so one script call
    can check them all atomically.
    """
    base = key("ratelimit", "{" + subject + "}")
    return f"{base}:{window_s}", f"{base}:tokens", f"{base}:concurrency", f"{base}:tokensum"


def subject_pattern(subject: str) -> str:
    """SCAN pattern of every key of a subject (whatever its window was)."""
    return glob_escape(key("ratelimit", "{" + subject + "}")) + ":*"


@dataclass(slots=True)
class Outcome:
    """The result of one check (from Redis or the local limiter)."""

    check: Check
    allowed: bool
    reason: str | None
    count: int
    reset_ms: int
    retry_after_ms: int

    @property
    def remaining(self) -> int | None:
        if not self.check.policy.requests:
            return None
        return max(self.check.policy.requests - self.count, 0)


# --- policies ---------------------------------------------------------------------


@dataclass(slots=True)
class PolicyTable:
    defaults: dict[str, Policy] = field(default_factory=dict)
    by_id: dict[int, Policy] = field(default_factory=dict)
    # (scope, model group id) -> that model's default policy of the scope.
    model_defaults: dict[tuple[str, int], Policy] = field(default_factory=dict)


_tables: LocalCache[str, PolicyTable] = LocalCache(
    "ratelimit_policies", ttl=lambda: settings.GATEWAY_POLICY_CACHE_S, maxsize=1
)
_KEY = "policies"


def _load_policies_sync() -> PolicyTable:
    from chat.gateway.models import RateLimitPolicy

    table = PolicyTable()
    for row in RateLimitPolicy.objects.filter(enabled=True):
        policy = Policy(
            id=row.pk,
            name=row.name,
            scope=row.scope,
            requests=row.requests,
            window_s=max(row.window_seconds, 1),
            tokens_per_minute=row.tokens_per_minute,
            concurrent=row.concurrent_requests,
            model_id=row.model_group_id,
        )
        if row.model_group_id is not None:
            if row.is_default:
                table.model_defaults[(row.scope, row.model_group_id)] = policy
            continue
        table.by_id[row.pk] = policy
        if row.is_default:
            table.defaults[row.scope] = policy
    return table


async def policies() -> PolicyTable:
    """The enabled policies, cached per process for GATEWAY_POLICY_CACHE_S (admin edits apply within it).

    The database being down must not take the limiter down: the last table keeps serving
    (none loaded yet: no policies, so the limits of the first load apply once it succeeds).
    """
    table = _tables.get(_KEY)
    if table is not MISSING:
        return table
    return await _tables.aget_or_load(
        # db(): the chat's database threads, not the one thread Django shares (a hung database must not block it).
        _KEY,
        lambda: db(_load_policies_sync)(),
        fallback_on=(Exception,),
        # A first load is waited for (a slow start must not serve requests without limits); only
        # its failure leaves the process without policies until a load succeeds.
        default=PolicyTable(),
    )


def invalidate_policies() -> None:
    """Reload policies on next use (this process; others reload within GATEWAY_POLICY_CACHE_S)."""
    _tables.clear()


def checks_for(subject: Any, table: PolicyTable) -> list[Check]:
    """The limits that apply to a request from ``subject`` (a services.Subject)."""
    checks: list[Check] = []
    anonymous = subject.api_key_id is None and (subject.user_id is None or subject.is_anonymous)
    if (p := table.defaults.get("global")) is not None:
        # Anonymous requests have a bucket of their own (a share of the global policy): a flood of
        # them is refused there and never uses up the share of signed-in users and API keys.
        checks.append(
            Check("global", "global:anonymous", anonymous_share(p)) if anonymous else Check("global", "global", p)
        )
    if subject.api_key_id is not None:
        p = table.by_id.get(subject.api_key_policy_id) if subject.api_key_policy_id else None
        p = p or table.defaults.get("api_key")
        if p is not None:
            checks.append(Check("api_key", f"key:{subject.api_key_id}", p))
    elif subject.user_id is not None and not subject.is_anonymous:
        if (p := table.defaults.get("user")) is not None:
            checks.append(Check("user", f"user:{subject.user_id}", p))
    else:
        if subject.session_key and (p := table.defaults.get("anonymous")) is not None:
            checks.append(Check("anonymous", f"anon:{subject.session_key}", p))
        if subject.ip and (p := table.defaults.get("ip")) is not None:
            checks.append(Check("ip", f"ip:{subject.ip}", p))
    return checks


def anonymous_share(policy: Policy) -> Policy:
    """The global policy scaled by RATELIMIT_ANONYMOUS_GLOBAL_SHARE (at least 1 where it limits)."""
    return _scaled(policy, settings.RATELIMIT_ANONYMOUS_GLOBAL_SHARE)


@lru_cache(maxsize=16)  # per policy row version: no new object per request
def _scaled(policy: Policy, share: float) -> Policy:
    def scaled(n: int) -> int:
        return max(1, int(n * share)) if n else 0

    return replace(
        policy,
        name=f"{policy.name} (anonymous share)",
        requests=scaled(policy.requests),
        tokens_per_minute=scaled(policy.tokens_per_minute),
        concurrent=scaled(policy.concurrent),
    )


def model_checks_for(subject: Any, table: PolicyTable, model_id: int) -> list[Check]:
    """The limits a model group's policies add to a request for that model (usually none)."""
    if not table.model_defaults:
        return []
    get = table.model_defaults.get
    checks: list[Check] = []
    if (p := get(("global", model_id))) is not None:
        checks.append(Check("global", f"global:m{model_id}", p))
    if subject.api_key_id is not None:
        if (p := get(("api_key", model_id))) is not None:
            checks.append(Check("api_key", f"key:{subject.api_key_id}:m{model_id}", p))
    elif subject.user_id is not None and not subject.is_anonymous:
        if (p := get(("user", model_id))) is not None:
            checks.append(Check("user", f"user:{subject.user_id}:m{model_id}", p))
    else:
        if subject.session_key and (p := get(("anonymous", model_id))) is not None:
            checks.append(Check("anonymous", f"anon:{subject.session_key}:m{model_id}", p))
        if subject.ip and (p := get(("ip", model_id))) is not None:
            checks.append(Check("ip", f"ip:{subject.ip}:m{model_id}", p))
    return checks


def check_args(check: Check, member: str) -> tuple[list[str], list[Any]]:
    p = check.policy
    return list(check.keys), [
        p.window_s * 1000,
        p.requests,
        p.tokens_per_minute,
        p.concurrent,
        member,
        int(settings.RATELIMIT_SLOT_TTL_S * 1000),
    ]


def outcome_from_reply(check: Check, reply: list[Any]) -> Outcome:
    allowed, reason, count, reset_ms, retry_ms = (int(x) for x in reply[:5])
    return Outcome(check, bool(allowed), REASONS.get(reason), count, reset_ms, retry_ms)


# --- per-process fallback -----------------------------------------------------------

# A local slot dies with its process, so it needs no short lease (Redis slots do: slot_lease);
# this bound only guards against a settle() that never comes.
LOCAL_SLOT_MAX_S = 3600.0


@dataclass(slots=True)
class _LocalState:
    requests: deque[float] = field(default_factory=deque)  # arrival times (monotonic s)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    slots: dict[str, float] = field(default_factory=dict)  # member -> expiry


class LocalLimiter:
    """The same policies, counted in this process only (Redis unreachable, or no Redis at all).

    With N replicas a subject gets up to N times its limit: the price of staying up.
    All checks of a request run under one lock, so nothing needs undoing.
    """

    def __init__(self) -> None:
        self._state: dict[str, _LocalState] = {}
        self._lock = threading.Lock()

    def check_and_add(self, checks: list[Check], member: str) -> list[Outcome]:
        now = time.monotonic()
        with self._lock:
            outcomes = [self._check(c, now) for c in checks]
            if all(o.allowed for o in outcomes):
                for c in checks:
                    st = self._state[c.subject]
                    st.requests.append(now)
                    if c.policy.concurrent:
                        st.slots[member] = now + LOCAL_SLOT_MAX_S
            self._gc(now)
        return outcomes

    def _check(self, c: Check, now: float) -> Outcome:
        st = self._state.setdefault(c.subject, _LocalState())
        p = c.policy
        window = p.window_s
        while st.requests and st.requests[0] <= now - window:
            st.requests.popleft()
        count = len(st.requests)
        reset_ms = int(((st.requests[0] + window - now) if st.requests else window) * 1000)
        if p.requests and count >= p.requests:
            return Outcome(c, False, "requests", count, reset_ms, reset_ms)
        if p.tokens_per_minute:
            while st.tokens and st.tokens[0][0] <= now - 60:
                st.tokens.popleft()
            if sum(n for _, n in st.tokens) >= p.tokens_per_minute:
                wait = int((st.tokens[0][0] + 60 - now) * 1000)
                return Outcome(c, False, "tokens", count, reset_ms, wait)
        if p.concurrent:
            st.slots = {m: exp for m, exp in st.slots.items() if exp > now}
            if len(st.slots) >= p.concurrent:
                return Outcome(c, False, "concurrency", count, reset_ms, 1000)
        return Outcome(c, True, None, count + 1, reset_ms, 0)

    def settle(self, checks: list[Check], member: str, tokens: int) -> None:
        now = time.monotonic()
        with self._lock:
            for c in checks:
                st = self._state.get(c.subject)
                if st is None:
                    continue
                st.slots.pop(member, None)
                if tokens > 0 and c.policy.tokens_per_minute:
                    st.tokens.append((now, tokens))

    def reset(self, subject: str | None = None) -> None:
        with self._lock:
            if subject is None:
                self._state.clear()
            else:
                self._state.pop(subject, None)

    def _gc(self, now: float) -> None:
        # Bound memory: forget idle subjects (anonymous IPs/sessions come and go).
        if len(self._state) < 10_000:
            return
        idle = [
            s for s, st in self._state.items() if not st.slots and (not st.requests or st.requests[-1] < now - 3600)
        ]
        for s in idle:
            del self._state[s]


local_limiter = LocalLimiter()
