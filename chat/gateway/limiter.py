"""Sliding-window rate limiter shared by every app replica (Redis), with a per-process fallback.

Which limits apply to a request (``checks_for``):

- ``global``: every request, one key for the whole platform.
- ``api_key``: requests made with an API key: the key's own policy, else the scope default.
- ``user``: requests from a logged-in browser session (API-key requests are limited per key
  instead: a key is an integration's identity, with its own budget).
- ``anonymous`` + ``ip``: anonymous browser chat, per session and per IP address.

Each subject's limits (requests per window, tokens per sliding minute, concurrent
requests) are checked and recorded by ONE Lua script call on keys that share a Redis
Cluster hash slot (``vh:ratelimit:{user:42}:60``, ``...:tokens``, ``...:concurrency``).
The script reads the server's clock (TIME), so replicas with skewed clocks agree.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from django.conf import settings

from chat.asyncdb import db
from config.local_cache import MISSING, LocalCache
from config.redis import glob_escape, key

log = logging.getLogger(__name__)

# KEYS: 1 request window (zset: member -> arrival ms), 2 token charges (zset: "member:n" ->
# charge ms), 3 concurrency slots (zset: member -> expiry ms), 4 running sum of the charges
# in KEYS[2] (string; keeps the token check O(expired charges), not O(charges)).
# ARGV: 1 window ms, 2 max requests, 3 max tokens per minute, 4 max concurrent, 5 member,
# 6 slot ttl ms.
# Returns {allowed, reason (0 ok, 1 requests, 2 tokens, 3 concurrency), requests in window
# (including this one when allowed), ms until the window frees a slot, retry-after ms}.
CHECK_SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local max_req = tonumber(ARGV[2])
local max_tok = tonumber(ARGV[3])
local max_conc = tonumber(ARGV[4])
local member = ARGV[5]
local slot_ttl = tonumber(ARGV[6])

local function charge(entry)
  return tonumber(string.match(entry, ':(%d+)$')) or 0
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local reset = window
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if max_req > 0 and count >= max_req then
  return {0, 1, count, reset, reset}
end
if max_tok > 0 then
  local used = redis.call('GET', KEYS[4])
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  end
  if used == false then
    -- No running sum (first charge, or it expired apart from the charges): recount.
    used = 0
    local charges = redis.call('ZRANGE', KEYS[2], 0, -1)
    for i = 1, #charges do used = used + charge(charges[i]) end
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then redis.call('SET', KEYS[4], used, 'PX', ttl) end  -- expires with the charges
  else
    used = tonumber(used)
    if #expired > 0 then
      for i = 1, #expired do used = used - charge(expired[i]) end
      if used < 0 then used = 0 end
      redis.call('SET', KEYS[4], used, 'KEEPTTL')
    end
  end
  if used >= max_tok then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = 1000
    if first[2] then wait = tonumber(first[2]) + 60000 - now end
    return {0, 2, count, reset, wait}
  end
end
if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_conc then
    return {0, 3, count, reset, 1000}
  end
  redis.call('ZADD', KEYS[3], now + slot_ttl, member)
  redis.call('PEXPIRE', KEYS[3], slot_ttl)
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0, count + 1, reset, 0}
"""

# KEYS: 1 token charges, 2 concurrency slots, 3 running sum. ARGV: 1 member, 2 tokens (0: none).
SETTLE_SCRIPT = b"""
redis.call('ZREM', KEYS[2], ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if redis.call('EXISTS', KEYS[3]) == 0 then
    -- The sum must cover the charges still in the window before this one is added.
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
    local used = 0
    local charges = redis.call('ZRANGE', KEYS[1], 0, -1)
    for i = 1, #charges do used = used + (tonumber(string.match(charges[i], ':(%d+)$')) or 0) end
    redis.call('SET', KEYS[3], used)
  end
  redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. n)
  redis.call('PEXPIRE', KEYS[1], 60000)
  redis.call('INCRBY', KEYS[3], n)
  redis.call('PEXPIRE', KEYS[3], 60000)
end
return 1
"""

# Undo a check whose sibling check refused (the request never ran).
UNDO_SCRIPT = b"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

CHECK_SHA = hashlib.sha1(CHECK_SCRIPT).hexdigest()
SETTLE_SHA = hashlib.sha1(SETTLE_SCRIPT).hexdigest()
UNDO_SHA = hashlib.sha1(UNDO_SCRIPT).hexdigest()
SCRIPTS = {CHECK_SHA: CHECK_SCRIPT, SETTLE_SHA: SETTLE_SCRIPT, UNDO_SHA: UNDO_SCRIPT}

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
        )
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
    if _tables.get_stale(_KEY) is MISSING:
        _tables.set(_KEY, PolicyTable(), ttl=0)  # the last-known-good before any load: no limits
    return await _tables.aget_or_load(
        # db(): the chat's database threads, not the one thread Django shares (a hung database must not block it).
        _KEY,
        lambda: db(_load_policies_sync)(),
        fallback_on=(Exception,),
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


def check_args(check: Check, member: str) -> tuple[list[str], list[Any]]:
    p = check.policy
    return list(check.keys), [
        p.window_s * 1000,
        p.requests,
        p.tokens_per_minute,
        p.concurrent,
        member,
        settings.RATELIMIT_SLOT_TTL_S * 1000,
    ]


def outcome_from_reply(check: Check, reply: list[Any]) -> Outcome:
    allowed, reason, count, reset_ms, retry_ms = (int(x) for x in reply[:5])
    return Outcome(check, bool(allowed), REASONS.get(reason), count, reset_ms, retry_ms)


# --- per-process fallback -----------------------------------------------------------


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
                        st.slots[member] = now + settings.RATELIMIT_SLOT_TTL_S
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
