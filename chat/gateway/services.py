"""Gateway controls' contract with the chat pipeline (the hot path), and their writes.

The chat service calls, per request::

    key = cache_key_for(subject=..., model=..., messages=..., context_ids=..., params=...)
    admission = await admit(subject, cache_key=key)      # ONE Redis round trip
    if not admission.allowed:
        raise admission.as_error()                         # 429 + Retry-After / X-RateLimit-*
    try:
        if admission.cached: replay admission.cached       # no model call
        else: generate, then await cache_put(key, answer)  # complete answers only
    finally:
        await settle(subject, admission, prompt_tokens=..., completion_tokens=...)

``admit`` sends the subject's rate-limit checks (one EVALSHA per limited subject: global,
then the API key / user / anonymous session + IP), the cache GET and a lookup counter in
one non-transactional pipeline: one round trip to a single Redis; with a Redis Cluster,
one round trip per node involved, sent concurrently (redis-py splits the pipeline per node).

When Redis is unreachable the limiter follows RATELIMIT_FAIL_MODE (open: a per-process
limiter with the same policies; closed: 503) and the cache is skipped; every Redis call is
bounded by REDIS_TIMEOUT, so nothing hangs and nothing turns into a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisClusterException, RedisError

from chat.errors import AuthenticationRequired, RateLimited, ServiceUnavailable
from chat.gateway import cache, limiter
from chat.gateway.auth import confirm_not_revoked, revoked_set_key
from chat.gateway.redis_async import REDIS_ERRORS, redis_call
from config.redis import key, redis_enabled
from monitoring.metrics import (
    CACHE_LATENCY,
    CACHE_REQUESTS,
    RATELIMIT_FALLBACKS,
    RATELIMIT_LATENCY,
    RATELIMIT_REJECTIONS,
)

log = logging.getLogger(__name__)


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
        """The refusal as the platform error (REST 429 body + headers; websocket error frame)."""
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

    def openai_error(self) -> dict[str, Any]:
        """The refusal in OpenAI's shape (the /v1 endpoint answers 429 with this and headers())."""
        return {
            "error": {
                "message": str(self.as_error()),
                "type": "tokens" if self.reason == "tokens" else "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }


@dataclass(slots=True)
class _Ticket:
    """What settle() needs: which checks recorded the request, under which member, where."""

    member: str
    checks: list[limiter.Check]
    backend: str  # "redis" or "local"
    hit: bool = False  # answered from the response cache: settle() counts the hit
    settled: bool = False


# --- response cache key -----------------------------------------------------------------


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


# --- admit / settle -------------------------------------------------------------------------

# After a Redis failure, use the fallback (or refuse, in closed mode) until this monotonic
# time rather than paying a timeout per request.
_redis_down_until = 0.0


def _redis_usable() -> bool:
    return redis_enabled() and time.monotonic() >= _redis_down_until


def _mark_redis_down(exc: BaseException) -> None:
    global _redis_down_until
    if isinstance(exc, MaxConnectionsError):
        return  # this process's pool is busy: not an outage, do not stop using Redis
    _redis_down_until = time.monotonic() + settings.RATELIMIT_REDIS_RETRY_S
    RATELIMIT_FALLBACKS.labels(mode=settings.RATELIMIT_FAIL_MODE).inc()
    log.warning(
        "Redis unreachable (%s: %s); rate limiting fails %s", type(exc).__name__, exc, settings.RATELIMIT_FAIL_MODE
    )


def redis_state_reset() -> None:
    """Forget a Redis outage (tests; an operator after fixing Redis need not wait)."""
    global _redis_down_until
    _redis_down_until = 0.0


async def _run_scripts(client: Any, calls: list[tuple[str, list[str], list[Any]]], extra: list[tuple]) -> list[Any]:
    """EVALSHA each call (+ plain commands) in one pipeline; re-run NOSCRIPT ones with EVAL."""
    pipe = client.pipeline(transaction=False)
    for sha, keys, args in calls:
        # execute_command, not pipe.evalsha(): redis-py's cluster pipeline blocks the
        # evalsha method (it cannot pre-load scripts on every node); NOSCRIPT is handled below.
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
    for cmd, *cmd_args in extra:
        getattr(pipe, cmd)(*cmd_args)
    results = await pipe.execute(raise_on_error=False)
    # Cluster pipelines return a list per multi-node command; ours are all single-key.
    missing = [i for i, r in enumerate(results[: len(calls)]) if isinstance(r, NoScriptError)]
    if missing:
        # First use on this node (or after a restart / failover): EVAL sends the body and
        # caches it there, so later EVALSHAs find it.
        reruns = await asyncio.gather(
            *(client.eval(limiter.SCRIPTS[calls[i][0]], len(calls[i][1]), *calls[i][1], *calls[i][2]) for i in missing)
        )
        for i, r in zip(missing, reruns, strict=True):
            results[i] = r
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def _refusal(outcomes: list[limiter.Outcome]) -> Admission:
    worst = max((o for o in outcomes if not o.allowed), key=lambda o: o.retry_after_ms)
    RATELIMIT_REJECTIONS.labels(scope=worst.check.scope).inc()
    p = worst.check.policy
    limit = {"tokens": p.tokens_per_minute, "concurrency": p.concurrent}.get(worst.reason or "", p.requests)
    return Admission(
        allowed=False,
        scope=worst.check.scope,
        reason=worst.reason,
        limit=limit,
        remaining=0,
        reset_s=max(worst.reset_ms, 0) / 1000 if worst.reason == "requests" else max(worst.retry_after_ms, 0) / 1000,
        retry_after_s=max(worst.retry_after_ms, 0) / 1000,
    )


def _granted(outcomes: list[limiter.Outcome], ticket: _Ticket | None) -> Admission:
    limited = [o for o in outcomes if o.remaining is not None]
    if not limited:
        return Admission(token=ticket)
    tightest = min(limited, key=lambda o: o.remaining)
    return Admission(
        allowed=True,
        scope=tightest.check.scope,
        limit=tightest.check.policy.requests,
        remaining=tightest.remaining,
        reset_s=max(tightest.reset_ms, 0) / 1000,
        token=ticket,
    )


def _is_anonymous(subject: Subject) -> bool:
    return subject.is_anonymous or (subject.user_id is None and subject.api_key_id is None)


def _local_admission(checks: list[limiter.Check], member: str) -> Admission:
    outcomes = limiter.local_limiter.check_and_add(checks, member)
    if not all(o.allowed for o in outcomes):
        return _refusal(outcomes)
    return _granted(outcomes, _Ticket(member, checks, "local"))


async def admit(subject: Subject, *, cache_key: str | None) -> Admission:
    """Check-and-add the subject's rate limits and look up the cache, in one round trip.

    Raises AuthenticationRequired for anonymous subjects unless ANONYMOUS_CHAT_ENABLED,
    and ServiceUnavailable (503) when Redis is unreachable and RATELIMIT_FAIL_MODE=closed.
    A refused request gets ``allowed=False`` (the cached answer is not returned then).
    """
    if _is_anonymous(subject) and not settings.ANONYMOUS_CHAT_ENABLED:
        raise AuthenticationRequired("Log in to chat: anonymous chat is disabled on this site.")
    checks = limiter.checks_for(subject, await limiter.policies()) if settings.RATELIMIT_ENABLED else []
    revocation = bool(subject.revocation_prefix) and subject.api_key_id is not None
    if not checks and not cache_key and not revocation:
        return Admission()
    member = f"{uuid.uuid4().hex[:16]}"

    if not _redis_usable():
        if revocation:
            await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=None)
        if checks and redis_enabled() and settings.RATELIMIT_FAIL_MODE == "closed":
            raise _unavailable()
        if cache_key:
            CACHE_REQUESTS.labels(result="error" if redis_enabled() else "disabled").inc()
        return _local_admission(checks, member)

    started = time.perf_counter()
    calls = [(limiter.CHECK_SHA, *limiter.check_args(c, member)) for c in checks]
    extra: list[tuple] = []
    if cache_key:
        extra = [("get", cache_key), ("hincrby", cache.stats_key(), "lookups", 1)]
    if revocation:  # the API key's revocation check rides in the same round trip (last reply)
        extra.append(("sismember", revoked_set_key(), str(subject.api_key_id)))
    try:
        results = await redis_call(lambda r: _run_scripts(r, calls, extra))
    except REDIS_ERRORS as exc:
        _mark_redis_down(exc)
        if revocation:
            await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=None)
        if checks and settings.RATELIMIT_FAIL_MODE == "closed":
            raise _unavailable() from None
        if cache_key:
            CACHE_REQUESTS.labels(result="error").inc()
        return _local_admission(checks, member)
    elapsed = time.perf_counter() - started
    if checks:
        RATELIMIT_LATENCY.observe(elapsed)

    outcomes = [limiter.outcome_from_reply(c, r) for c, r in zip(checks, results, strict=False)]
    if revocation and results[-1]:
        await _undo([o.check for o in outcomes if o.allowed], member)
        await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=True)
    if not all(o.allowed for o in outcomes):
        await _undo([o.check for o in outcomes if o.allowed], member)
        return _refusal(outcomes)

    ticket = _Ticket(member, checks, "redis")
    admission = _granted(outcomes, ticket)
    if cache_key:
        CACHE_LATENCY.observe(elapsed)
        raw = results[len(calls)]
        data = cache.decode(raw) if raw is not None else None
        if data is None:
            CACHE_REQUESTS.labels(result="miss").inc()
        else:
            CACHE_REQUESTS.labels(result="hit").inc()
            admission.cached = CachedAnswer(
                content=data["content"],
                citations=list(data.get("citations") or []),
                model=str(data.get("model") or ""),
                prompt_tokens=int(data.get("prompt_tokens") or 0),
                completion_tokens=int(data.get("completion_tokens") or 0),
            )
            ticket.hit = True
    return admission


def _unavailable() -> ServiceUnavailable:
    retry = max(1, round(settings.RATELIMIT_REDIS_RETRY_S))
    return ServiceUnavailable(
        "Rate limiting is unavailable right now; try again shortly.",
        headers={"Retry-After": str(retry)},
        retry_after=retry,
    )


async def _undo(checks: list[limiter.Check], member: str) -> None:
    """Remove a refused request from the windows of the checks that had let it through."""
    if not checks:
        return
    calls = [(limiter.UNDO_SHA, [c.keys[0], c.keys[2]], [member]) for c in checks]
    try:
        await redis_call(lambda r: _run_scripts(r, calls, []))
    except REDIS_ERRORS:
        # Worst case the request counts against those windows (over-refusal, never over-admission).
        log.warning("could not undo a refused request's rate-limit entries", exc_info=True)


async def settle(subject: Subject, admission: Admission, *, prompt_tokens: int, completion_tokens: int) -> None:
    """After the answer: charge token limits from actual usage, release the concurrency slot.

    Call it once per admitted request, in a ``finally`` (with the tokens used so far when
    the answer failed). Cached answers cost no model tokens, so nothing is charged for them;
    their hit is counted here (the shared hit-rate counter), after the answer, off its path.
    Never raises: a slot that cannot be released expires after RATELIMIT_SLOT_TTL_S.
    """
    ticket = admission.token
    if not isinstance(ticket, _Ticket) or ticket.settled or not admission.allowed:
        return
    ticket.settled = True
    tokens = 0 if admission.cached is not None else max(0, int(prompt_tokens) + int(completion_tokens))
    checks = [c for c in ticket.checks if c.policy.concurrent or (tokens and c.policy.tokens_per_minute)]
    if ticket.backend == "local":
        if checks:
            limiter.local_limiter.settle(checks, ticket.member, tokens)
        return
    calls = [
        (
            limiter.SETTLE_SHA,
            [c.keys[1], c.keys[2], c.keys[3]],
            [ticket.member, tokens if c.policy.tokens_per_minute else 0],
        )
        for c in checks
    ]
    extra = [("hincrby", cache.stats_key(), "hits", 1)] if ticket.hit else []
    if not calls and not extra:
        return
    try:
        await redis_call(lambda r: _run_scripts(r, calls, extra))
    except REDIS_ERRORS as exc:
        log.warning("could not settle rate-limit usage (%s); the slot expires on its own", exc)


# --- response cache writes ------------------------------------------------------------------


async def cache_ttl() -> int:
    """The entry TTL: the admin's override (Redis-held, shared) or RESPONSE_CACHE_TTL."""
    override = cache.cached_ttl_override()
    if override is False:
        override = None
        try:
            raw = await redis_call(lambda r: r.hget(cache.config_key(), "response_cache_ttl"))
            override = cache.clamp_ttl(int(raw)) if raw else None
        except (*REDIS_ERRORS, ValueError):
            pass
        cache.remember_ttl_override(override)
    return override or settings.RESPONSE_CACHE_TTL


async def cache_put(cache_key: str, answer: CachedAnswer, *, ttl: int | None = None) -> None:
    """Store a final answer (complete answers only). Never raises; a failed write is a future miss.

    ``ttl`` (seconds) overrides the configured TTL (tests, special callers).
    """
    if not cache_key or not settings.RESPONSE_CACHE_ENABLED or not answer.content or not _redis_usable():
        return
    try:
        seconds = ttl or await cache_ttl()
        await redis_call(lambda r: r.set(cache_key, cache.encode(answer), ex=seconds))
    except REDIS_ERRORS as exc:
        log.warning("response cache write failed (%s: %s)", type(exc).__name__, exc)


# --- chat sessions ---------------------------------------------------------------------------


def session_key(user_id: int | str | None, session_id: str) -> str:
    """``vh:session:<user id or anon>:<session id>``."""
    return key("session", user_id if user_id is not None else "anon", session_id)


async def touch_session(
    *,
    user_id: int | None,
    session_id: str,
    conversation_id: int | str | None = None,
    client: dict[str, Any] | str | None = None,
) -> bool:
    """Record chat-session facts (last active, conversation, client) and refresh the 30-min TTL.

    Returns False when Redis is unavailable (session facts are advisory; chat goes on).
    """
    if not redis_enabled() or not session_id:
        return False
    facts: dict[str, str] = {"last_active": f"{time.time():.3f}"}
    if conversation_id is not None:
        facts["conversation_id"] = str(conversation_id)
    if client is not None:
        facts["client"] = client if isinstance(client, str) else json.dumps(client, ensure_ascii=False)[:1000]
    k = session_key(user_id, session_id)
    try:
        await redis_call(
            lambda r: (
                r.pipeline(transaction=False).hset(k, mapping=facts).expire(k, settings.CHAT_SESSION_TTL).execute()
            )
        )
    except REDIS_ERRORS as exc:
        log.warning("could not touch chat session (%s: %s)", type(exc).__name__, exc)
        return False
    return True


async def get_session(*, user_id: int | None, session_id: str) -> dict[str, str]:
    """The session facts touch_session stored ({} when none or Redis is unavailable)."""
    if not redis_enabled():
        return {}
    try:
        raw = await redis_call(lambda r: r.hgetall(session_key(user_id, session_id)))
    except REDIS_ERRORS:
        return {}
    return {k.decode(): v.decode() for k, v in raw.items()}


# --- admin writes (synchronous: admin views, management commands) ---------------------------


@dataclass(frozen=True, slots=True)
class CreatedKey:
    api_key: Any  # the APIKey row
    full_key: str  # shown once; only its hash is stored


def apikey_create(
    *,
    name: str,
    user: Any,
    scopes: list[str],
    policy: Any = None,
    expires_at: Any = None,
) -> CreatedKey:
    """A new API key for ``user``. The returned full key is never retrievable again."""
    from chat.gateway.auth import generate_key
    from chat.gateway.models import API_KEY_SCOPES, APIKey

    unknown = [s for s in scopes if s not in API_KEY_SCOPES]
    if unknown or not scopes:
        raise ValueError(f"Scopes must be a non-empty subset of {', '.join(API_KEY_SCOPES)} (got {scopes}).")
    full, prefix, digest = generate_key()
    row = APIKey.objects.create(
        name=name,
        user=user,
        prefix=prefix,
        secret_hash=digest,
        scopes=sorted(set(scopes)),
        policy=policy,
        expires_at=expires_at,
    )
    return CreatedKey(row, full)


def apikey_revoke(*, api_key: Any) -> None:
    """Revoke at once, in every process: the row (source of truth) and the Redis revoked set."""
    from django.utils import timezone

    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    apikey_publish_revocation(api_key_id=api_key.pk)


def apikey_publish_revocation(*, api_key_id: int) -> bool:
    """Add a key id to the Redis revoked set (processes that cached the key refuse it at once).

    When Redis is down, processes re-read the database within GATEWAY_KEY_CACHE_S instead.
    """
    from chat.gateway.auth import revoked_set_key
    from config.redis import sync_redis

    if not redis_enabled():
        return False
    try:
        with sync_redis() as r:
            r.sadd(revoked_set_key(), str(api_key_id))
    except (RedisError, RedisClusterException, OSError):
        log.warning("could not publish API key revocation to Redis", exc_info=True)
        return False
    return True


def ratelimit_reset(*, subjects: list[str]) -> int:
    """Delete every rate-limit key of these subjects (all windows); returns the keys removed."""
    from config.redis import sync_redis

    removed = 0
    with sync_redis() as r:
        for subject in subjects:
            found = [k for k in r.scan_iter(match=limiter.subject_pattern(subject), count=500)]
            if found:
                removed += int(r.unlink(*found))
            limiter.local_limiter.reset(subject)
    return removed


def cache_delete(*, entry_key: str) -> bool:
    """Delete one response-cache entry (full key or digest)."""
    from config.redis import sync_redis

    k = entry_key.strip()
    if not k.startswith(cache.prefix()):
        k = cache.entry_key(k)
    with sync_redis() as r:
        return bool(r.unlink(k))


def keys_purge_prefix(*, prefix: str, batch: int = 500) -> int:
    """UNLINK every key under ``<platform prefix>:<prefix>`` in batches (every cluster master).

    ``prefix`` is relative to the platform namespace and must not be empty (a guard against
    wiping sessions, history and limits by accident); returns the number of keys removed.
    """
    from chat.gateway.redis_sync import glob_escape
    from config.redis import sync_redis

    prefix = prefix.strip()
    if not prefix:
        raise ValueError("A prefix is required.")
    full = key(prefix)
    removed = 0
    with sync_redis() as r:
        pending: list[bytes] = []
        # scan_iter on a cluster client visits every primary; UNLINK of many keys is split
        # per slot by the cluster client.
        for k in r.scan_iter(match=glob_escape(full) + "*", count=1000):
            pending.append(k)
            if len(pending) >= batch:
                removed += int(r.unlink(*pending))
                pending = []
        if pending:
            removed += int(r.unlink(*pending))
    return removed


def cache_flush() -> int:
    """Delete every response-cache entry (the namespace), keeping the hit/lookup counters."""
    return keys_purge_prefix(prefix="chat:response:")


def cache_stats_reset() -> None:
    from config.redis import sync_redis

    with sync_redis() as r:
        r.unlink(cache.stats_key())


def cache_ttl_set(*, seconds: int | None) -> int:
    """Set (or with None, clear) the shared TTL override for new entries; returns the TTL in force.

    Other processes pick it up within GATEWAY_POLICY_CACHE_S. Existing entries keep theirs.
    """
    from config.redis import sync_redis

    with sync_redis() as r:
        if seconds is None:
            r.hdel(cache.config_key(), "response_cache_ttl")
        else:
            seconds = cache.clamp_ttl(seconds)
            r.hset(cache.config_key(), "response_cache_ttl", seconds)
    cache.forget_ttl_override()
    return seconds or settings.RESPONSE_CACHE_TTL
