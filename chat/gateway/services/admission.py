"""``admit`` and ``settle``: the rate limits and the cache lookup of one request, in one round trip.

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
then the API key / user / anonymous session + IP), the cache GET, a lookup counter and the
index generation (an entry is served only at the generation it was made at) in one
non-transactional pipeline: one round trip to a single Redis; with a Redis Cluster,
one round trip per node involved, sent concurrently (redis-py splits the pipeline per node).

With a model group named (``model=``), that model's rate-limit policies and the caller's
monthly token budgets ride in the same round trip (budgets: one ``GET`` each); ``settle``
charges the budgets and adds the request to the usage counters (chat/gateway/usage.py)
in its round trip, so no request writes the database.

When Redis is unreachable the limiter follows RATELIMIT_FAIL_MODE (open: a per-process
limiter with the same policies; closed: 503) and the cache is skipped; every Redis call is
bounded by REDIS_TIMEOUT, so nothing hangs and nothing turns into a 500. After a failure
Redis is left alone for RATELIMIT_REDIS_RETRY_S (``redis_usable``), so an outage costs one
timeout per interval, not one per request.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from redis.exceptions import MaxConnectionsError

from chat.errors import AuthenticationRequired, ServiceUnavailable
from chat.gateway import budgets, cache, limiter, usage
from chat.gateway.auth import confirm_not_revoked, revoked_set_key
from chat.gateway.redis_async import REDIS_ERRORS, redis_scripts
from chat.gateway.services import slot_lease
from chat.gateway.types import Admission, CachedAnswer, Subject
from config.redis import REDIS_OUTAGE, redis_enabled
from knowledge.services.generation import generation_key
from monitoring import tracing
from monitoring.metrics import (
    BUDGET_REJECTIONS,
    CACHE_LATENCY,
    CACHE_REQUESTS,
    RATELIMIT_FALLBACKS,
    RATELIMIT_LATENCY,
    RATELIMIT_REJECTIONS,
    child,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Ticket:
    """What settle() needs: which checks recorded the request, under which member, where."""

    member: str
    checks: list[limiter.Check]
    backend: str  # "redis" or "local"
    hit: bool = False  # answered from the response cache: settle() counts the hit
    settled: bool = False
    budgets: list[budgets.BudgetCheck] = field(default_factory=list)  # charged with the tokens used
    lease: slot_lease.Lease | None = None  # renews the Redis concurrency slots until settle()


# --- Redis-down state ------------------------------------------------------------------------

# After a Redis failure, use the fallback (or refuse, in closed mode) until this monotonic
# time rather than paying a timeout per request.
_redis_down_until = 0.0


def redis_usable() -> bool:
    """Redis is configured and not marked down by a recent failure."""
    return redis_enabled() and time.monotonic() >= _redis_down_until


def redis_failure_seen() -> bool:
    """Redis failed at least once since the last ``redis_state_reset`` (tests)."""
    return _redis_down_until != 0.0


def _mark_redis_down(exc: BaseException) -> None:
    global _redis_down_until
    if isinstance(exc, MaxConnectionsError):
        return  # this process's pool is busy: not an outage, do not stop using Redis
    _redis_down_until = time.monotonic() + settings.RATELIMIT_REDIS_RETRY_S
    RATELIMIT_FALLBACKS.labels(mode=settings.RATELIMIT_FAIL_MODE).inc()
    # Logged once per outage interval with a count (monitoring.outages), not once per retry.
    REDIS_OUTAGE.failed(exc)


def redis_state_reset() -> None:
    """Forget a Redis outage (tests; an operator after fixing Redis need not wait)."""
    global _redis_down_until
    _redis_down_until = 0.0


# --- admit ---------------------------------------------------------------------------------------


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
        # Only a model's own limits refused: another model (the group's fallbacks) may still answer.
        model_scoped=all(o.check.policy.model_id is not None for o in outcomes if not o.allowed),
    )


def _budget_refusal(check: budgets.BudgetCheck) -> Admission:
    BUDGET_REJECTIONS.labels(scope=check.scope).inc()
    reset_s = max(budgets.month_now()[1] - time.time(), 1.0)
    return Admission(
        allowed=False,
        scope=check.scope,
        reason="budget",
        remaining=0,
        reset_s=reset_s,
        retry_after_s=reset_s,
        budget_limit=check.limit,
        budget_remaining=0,
        budget_reset_s=reset_s,
        budget_model=check.model,
        model_scoped=bool(check.model),
    )


def _with_budget(admission: Admission, checks: list[budgets.BudgetCheck], used: list[int]) -> Admission:
    """The tightest budget's figures on an allowed admission (its X-Budget-* headers)."""
    left, check = min(((c.limit - u, c) for c, u in zip(checks, used, strict=True)), key=lambda pair: pair[0])
    admission.budget_limit = check.limit
    admission.budget_remaining = max(left, 0)
    admission.budget_reset_s = max(budgets.month_now()[1] - time.time(), 0.0)
    return admission


def _untracked(subject: Subject, model: Any) -> Admission:
    """No limit, cache or budget to ask Redis about: no round trip now; settle() still counts a model's usage."""
    if model is None:
        return Admission()
    admission = Admission(token=_Ticket("", [], "redis" if redis_usable() else "local"))
    admission.usage.model = model.name
    return admission


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


async def admit(subject: Subject, *, cache_key: str | None, model: Any = None) -> Admission:
    """Check-and-add the subject's rate limits and look up the cache, in one round trip.

    Raises AuthenticationRequired for anonymous subjects unless CHAT_ANONYMOUS_ENABLED,
    and ServiceUnavailable (503) when Redis is unreachable and RATELIMIT_FAIL_MODE=closed.
    A refused request gets ``allowed=False`` (the cached answer is not returned then).
    ``model``: the model group asked for (an ``inference.config.GroupConfig``): its rate-limit
    policies and the subject's budgets for it apply too, in the same round trip.
    Traced as ``chat.admission`` (the Redis round trip is its child).
    """
    with tracing.span("chat.admission", **{"gateway.cache_lookup": cache_key is not None}) as span:
        admission = await _admit(subject, cache_key=cache_key, model=model)
        if span.is_recording():
            span.set_attributes(
                {
                    "gateway.allowed": admission.allowed,
                    "gateway.cache_hit": admission.cached is not None,
                    "gateway.scope": admission.scope or "",
                    "gateway.reason": admission.reason or "",
                }
            )
        return admission


async def _admit(subject: Subject, *, cache_key: str | None, model: Any) -> Admission:
    if _is_anonymous(subject) and not settings.CHAT_ANONYMOUS_ENABLED:
        raise AuthenticationRequired("Log in to chat: anonymous chat is disabled on this site.")
    checks = limiter.checks_for(subject, await limiter.policies()) if settings.RATELIMIT_ENABLED else []
    if model is not None and settings.RATELIMIT_ENABLED:
        checks += limiter.model_checks_for(subject, await limiter.policies(), model.id)
    spend = budgets.budget_checks(subject, await budgets.budget_table(), model)
    revocation = bool(subject.revocation_prefix) and subject.api_key_id is not None
    if not checks and not cache_key and not revocation and not spend:
        return _untracked(subject, model)
    member = secrets.token_hex(8)  # this request's entry in the window sets

    if not redis_usable():
        if revocation:
            await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=None)
        if checks and redis_enabled() and settings.RATELIMIT_FAIL_MODE == "closed":
            raise _unavailable()
        if cache_key:
            CACHE_REQUESTS.labels(result="error" if redis_enabled() else "disabled").inc()
        return _named(_local_admission(checks, member), model)

    started = time.perf_counter()
    calls = [(limiter.CHECK_SHA, *limiter.check_args(c, member)) for c in checks]
    extra: list[tuple] = []
    if cache_key:
        # The index generation rides along: an entry made before a document changed is a miss.
        extra = [("GET", cache_key), ("HINCRBY", cache.stats_key(), "lookups", 1), ("GET", generation_key())]
    spent_at = len(calls) + len(extra)
    if spend:  # one MGET: the subject's budget counters share a slot
        extra.append(("MGET", *[b.key for b in spend]))
    if revocation:  # the API key's revocation check rides in the same round trip (last reply)
        extra.append(("SISMEMBER", revoked_set_key(), str(subject.api_key_id)))
    try:
        results = await redis_scripts(calls, extra)
    except REDIS_ERRORS as exc:
        _mark_redis_down(exc)
        if revocation:
            await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=None)
        if checks and settings.RATELIMIT_FAIL_MODE == "closed":
            raise _unavailable() from None
        if cache_key:
            CACHE_REQUESTS.labels(result="error").inc()
        return _named(_local_admission(checks, member), model)
    elapsed = time.perf_counter() - started
    if REDIS_OUTAGE.down():
        REDIS_OUTAGE.succeeded()
    if checks:
        RATELIMIT_LATENCY.observe(elapsed)

    outcomes = [limiter.outcome_from_reply(c, r) for c, r in zip(checks, results, strict=False)]
    if revocation and results[-1]:
        await _undo([o.check for o in outcomes if o.allowed], member)
        await confirm_not_revoked(subject.revocation_prefix, revoked_in_redis=True)
    if not all(o.allowed for o in outcomes):
        await _undo([o.check for o in outcomes if o.allowed], member)
        return _refusal(outcomes)
    used = [int(v or 0) for v in results[spent_at]] if spend else []
    for check, spent in zip(spend, used, strict=True):
        if spent >= check.limit:
            await _undo(checks, member)
            return _budget_refusal(check)

    ticket = _Ticket(member, checks, "redis", budgets=spend)
    ticket.lease = slot_lease.lease([c.keys[2] for c in checks if c.policy.concurrent], member)
    admission = _named(_granted(outcomes, ticket), model)
    if spend:
        _with_budget(admission, spend, used)
    if cache_key:
        CACHE_LATENCY.observe(elapsed)
        raw = results[len(calls)]
        admission.cache_generation = cache.current_generation(results[len(calls) + 2])
        data = cache.decode(raw) if raw is not None else None
        if data is not None and not cache.fresh(data, admission.cache_generation):
            data = None  # made before a document was deleted, replaced or hidden: never served
        if data is None:
            child(CACHE_REQUESTS, "miss").inc()
        else:
            child(CACHE_REQUESTS, "hit").inc()
            admission.cached = CachedAnswer(
                content=data["content"],
                citations=list(data.get("citations") or []),
                model=str(data.get("model") or ""),
                prompt_tokens=int(data.get("prompt_tokens") or 0),
                completion_tokens=int(data.get("completion_tokens") or 0),
                chunks=cache.chunks_of(data),
            )
            ticket.hit = True
    return admission


def _named(admission: Admission, model: Any) -> Admission:
    if model is not None:
        admission.usage.model = model.name
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
        await redis_scripts(calls)
    except REDIS_ERRORS:
        # Worst case the request counts against those windows (over-refusal, never over-admission).
        log.warning("could not undo a refused request's rate-limit entries", exc_info=True)


# --- settle ---------------------------------------------------------------------------------------


@tracing.span("chat.settle")
async def settle(subject: Subject, admission: Admission, *, prompt_tokens: int, completion_tokens: int) -> None:
    """After the answer: charge token limits and budgets from actual usage, release the concurrency
    slot, add the request to the usage counters (``admission.usage`` says which model and how it went).

    Call it once per admitted request, in a ``finally`` (with the tokens used so far when
    the answer failed). Cached answers cost no model tokens, so nothing is charged for them;
    their hit is counted here (the shared hit-rate counter), after the answer, off its path.
    Never raises: a slot that cannot be released expires after RATELIMIT_SLOT_TTL_S.
    """
    ticket = admission.token
    if not isinstance(ticket, _Ticket) or ticket.settled or not admission.allowed:
        return
    ticket.settled = True
    if ticket.lease is not None:
        ticket.lease.release()
    cached = admission.cached is not None
    tokens = 0 if cached else max(0, int(prompt_tokens) + int(completion_tokens))
    checks = [c for c in ticket.checks if c.policy.concurrent or (tokens and c.policy.tokens_per_minute)]
    # Usage is counted per model group: requests that name none (whoami) are not model usage.
    counted = bool(admission.usage.model)
    prefix, amounts = usage.record_args(
        subject,
        admission.usage,
        cached=cached,
        prompt_tokens=0 if cached else prompt_tokens,
        completion_tokens=0 if cached else completion_tokens,
    )
    if ticket.backend == "local" or not redis_usable():
        if checks and ticket.backend == "local":
            limiter.local_limiter.settle(checks, ticket.member, tokens)
        if counted:
            usage.local_usage.add(prefix, amounts)
            usage.ensure_flusher()
        return
    calls = [
        (
            limiter.SETTLE_SHA,
            [c.keys[1], c.keys[2], c.keys[3]],
            [ticket.member, tokens if c.policy.tokens_per_minute else 0],
        )
        for c in checks
    ]
    charge = tokens if ticket.budgets else 0
    if counted or charge:  # the usage counters and the budget charges: one script call, one slot
        budget_keys = [b.key for b in ticket.budgets]
        keys, args = usage.redis_call(
            subject, prefix, amounts if counted else [], budget_keys=budget_keys, tokens=charge
        )
        calls.append((limiter.USAGE_SHA, keys, args))
    extra: list[tuple] = [("HINCRBY", cache.stats_key(), "hits", 1)] if ticket.hit else []
    if not calls and not extra:
        return
    try:
        await redis_scripts(calls, extra)
    except REDIS_ERRORS as exc:
        log.warning("could not settle rate-limit usage (%s); the slot expires on its own", exc)
        if counted:
            usage.local_usage.add(prefix, amounts)  # counted all the same, flushed from this process
    if counted:
        usage.ensure_flusher()
