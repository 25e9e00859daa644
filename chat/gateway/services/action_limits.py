"""Limits on actions that cost storage rather than model time: new anonymous sessions, new conversations.

A chat request is limited by ``admit``; these actions are not chat requests but each one
writes a row (a session, a conversation), so without a bound a client could create them
without end (and, before trusted proxies, every new session was a fresh rate-limit
budget). Each check is the limiter's sliding-window script on its own subject
(``sessions:ip:<addr>``, ``conversations:user:<id>``...): one Redis call per action, never
on the chat path. Redis down: the per-process limiter, as for chat requests.
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings

from chat.errors import RateLimited
from chat.gateway import limiter
from chat.gateway.redis_async import REDIS_ERRORS, redis_scripts
from chat.gateway.scripts import CHECK_SCRIPT
from chat.gateway.services.admission import redis_usable
from chat.gateway.types import Subject
from config.redis import sync_redis

log = logging.getLogger(__name__)


def _check(kind: str, subject: str, requests: int, window_s: int) -> limiter.Check:
    policy = limiter.Policy(id=None, name=kind, scope=kind, requests=requests, window_s=max(1, window_s))
    return limiter.Check(kind, f"{kind}:{subject}", policy)


def session_checks(ip: str) -> list[limiter.Check]:
    """New anonymous sessions per client address (CHAT_ANONYMOUS_SESSIONS_PER_IP per window)."""
    if not ip or not settings.RATELIMIT_ENABLED or settings.CHAT_ANONYMOUS_SESSIONS_PER_IP <= 0:
        return []
    return [
        _check(
            "sessions", f"ip:{ip}", settings.CHAT_ANONYMOUS_SESSIONS_PER_IP, settings.CHAT_ANONYMOUS_SESSIONS_WINDOW_S
        )
    ]


def conversation_checks(subject: Subject) -> list[limiter.Check]:
    """New conversations per caller: the key, the user, or the anonymous session and its address."""
    limit, window = settings.CHAT_CONVERSATIONS_PER_WINDOW, settings.CHAT_CONVERSATIONS_WINDOW_S
    if not settings.RATELIMIT_ENABLED or limit <= 0:
        return []
    if subject.api_key_id is not None:
        return [_check("conversations", f"key:{subject.api_key_id}", limit, window)]
    if subject.user_id is not None and not subject.is_anonymous:
        return [_check("conversations", f"user:{subject.user_id}", limit, window)]
    checks = [_check("conversations", f"anon:{subject.session_key}", limit, window)] if subject.session_key else []
    if subject.ip:
        checks.append(_check("conversations", f"ip:{subject.ip}", limit, window))
    return checks


def _refused(outcomes: list[limiter.Outcome]) -> RateLimited | None:
    refused = [o for o in outcomes if not o.allowed]
    if not refused:
        return None
    worst = max(refused, key=lambda o: o.retry_after_ms)
    retry = max(1, round(worst.retry_after_ms / 1000 + 0.499))
    what = "new sessions from your address" if worst.check.scope == "sessions" else "new conversations"
    return RateLimited(
        f"Too many {what}; retry in {retry} s.",
        headers={"Retry-After": str(retry)},
        scope=worst.check.scope,
        reason="requests",
        retry_after=retry,
        limit=worst.check.policy.requests,
        remaining=0,
    )


def _local(checks: list[limiter.Check], member: str) -> RateLimited | None:
    return _refused(limiter.local_limiter.check_and_add(checks, member))


def check_action_sync(checks: list[limiter.Check]) -> None:
    """Record one action against ``checks``; raises RateLimited (429) when one is used up."""
    if not checks:
        return
    member = secrets.token_hex(8)
    if not redis_usable():
        err = _local(checks, member)
    else:
        try:
            replies = []
            with sync_redis() as r:
                for c in checks:
                    keys, args = limiter.check_args(c, member)
                    replies.append(r.eval(CHECK_SCRIPT, len(keys), *keys, *args))
            err = _refused([limiter.outcome_from_reply(c, reply) for c, reply in zip(checks, replies, strict=True)])
        except (*REDIS_ERRORS, RuntimeError) as exc:
            log.warning("action limit check fell back to this process (%s)", exc)
            err = _local(checks, member)
    if err is not None:
        raise err


async def check_action(checks: list[limiter.Check]) -> None:
    """``check_action_sync`` for the event loop (the websocket's connect)."""
    if not checks:
        return
    member = secrets.token_hex(8)
    if not redis_usable():
        err = _local(checks, member)
    else:
        calls = [(limiter.CHECK_SHA, *limiter.check_args(c, member)) for c in checks]
        try:
            replies = await redis_scripts(calls)
            err = _refused([limiter.outcome_from_reply(c, reply) for c, reply in zip(checks, replies, strict=True)])
        except REDIS_ERRORS as exc:
            log.warning("action limit check fell back to this process (%s)", exc)
            err = _local(checks, member)
    if err is not None:
        raise err
