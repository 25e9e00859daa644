"""API-key authentication: bearer keys for integrators (browser users keep Django sessions).

A key looks like ``vhk_k3j9x0ab_<43 url-safe characters>``: ``vhk_`` + 8 characters is the
prefix (stored in clear, unique: finds the row, shown in admin), the rest is 256 random
bits. Only sha256(key) is stored. A fast hash is enough because the secret is random: a
dictionary or brute-force attack on 2**256 possibilities is hopeless either way, whereas
a slow KDF (bcrypt, PBKDF2) exists to protect low-entropy passwords and would add
tens of milliseconds to every API request.

Revocation is immediate across processes: the async path caches key rows per process
(GATEWAY_KEY_CACHE_S) but checks every cached hit against a Redis set of revoked key
ids (one SISMEMBER); when Redis cannot answer it re-reads the row from the database.
The DRF path reads the database on every request.

While the database is unreachable, a key this process has seen keeps working with its
last-known-good row (``config_stale_served_total{cache="api_keys"}``): integrators' requests
that store nothing do not need PostgreSQL. A key never seen answers 503, not 401 or 500.
Revocation is then as fresh as Redis' revoked set (immediate while Redis answers).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import string
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from chat.asyncdb import db
from chat.errors import AuthenticationRequired, ServiceUnavailable
from chat.gateway.redis_async import redis_call
from chat.gateway.types import Subject
from config import proxies
from config.local_cache import LOAD_WAIT_S, MISSING, LocalCache
from config.redis import key, redis_enabled
from monitoring.metrics import API_KEY_AUTHENTICATIONS, child
from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)

KEY_PREFIX = "vhk_"
PREFIX_CHARS = 8
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
KEY_RE = re.compile(r"^(vhk_[a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API key speaks for (request.auth under DRF)."""

    user_id: int
    api_key_id: int
    scopes: frozenset[str]
    policy_id: int | None = None
    prefix: str = ""
    # Model-group ids this key may use (chat.gateway.access); None: every model.
    allowed_models: frozenset[int] | None = None
    # True: served from the per-process key cache and the Redis revocation check was left to
    # the request's admit() round trip (authenticate_bearer(defer_revocation_check=True)).
    revocation_pending: bool = False

    def has_scopes(self, *scopes: str) -> bool:
        return all(s in self.scopes for s in scopes)


# --- keys -------------------------------------------------------------------------------


def generate_key() -> tuple[str, str, str]:
    """A new key: (full key to show once, prefix, sha256 hex to store)."""
    prefix = KEY_PREFIX + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_CHARS))
    full = f"{prefix}_{secrets.token_urlsafe(32)}"
    return full, prefix, hash_key(full)


def hash_key(full_key: str) -> str:
    return hashlib.sha256(full_key.encode()).hexdigest()


def revoked_set_key() -> str:
    return key("apikey", "revoked")


def parse_bearer(authorization_header: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>``; None when there is no bearer header.

    Raises AuthenticationRequired when the header says Bearer but the key is malformed.
    """
    if not authorization_header:
        return None
    scheme, _, value = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    if not KEY_RE.match(value):
        API_KEY_AUTHENTICATIONS.labels(outcome="malformed").inc()
        raise AuthenticationRequired(
            "Malformed API key: expected 'Authorization: Bearer vhk_xxxxxxxx_<secret>'.", reason="malformed_key"
        )
    return value


# --- lookups ------------------------------------------------------------------------------


@dataclass(slots=True)
class _KeyFacts:
    id: int
    prefix: str
    secret_hash: str
    user_id: int
    user_active: bool
    scopes: frozenset[str]
    policy_id: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    allowed_models: frozenset[int] | None = None


def _facts_sync(prefix: str) -> _KeyFacts | None:
    from chat.gateway.access import key_allowed, user_allowed_sync
    from chat.gateway.models import APIKey

    row = APIKey.objects.select_related("user").filter(prefix=prefix).first()
    if row is None:
        return None
    return _KeyFacts(
        id=row.pk,
        prefix=row.prefix,
        secret_hash=row.secret_hash,
        user_id=row.user_id,
        user_active=row.user.is_active,
        scopes=frozenset(row.scopes or []),
        policy_id=row.policy_id,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        allowed_models=key_allowed(row.allowed_models or [], user_allowed_sync(row.user_id)),
    )


def _touch_last_used_sync(key_id: int, now: datetime) -> None:
    from chat.gateway.models import APIKey

    # The condition makes concurrent replicas write at most once per minute between them.
    APIKey.objects.filter(pk=key_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY)
    ).update(last_used_at=now)


def _verify(facts: _KeyFacts | None, full_key: str) -> Principal:
    """The shared checks (hash, revocation, expiry, owner active); raises AuthenticationRequired."""
    if facts is None or not hmac.compare_digest(facts.secret_hash, hash_key(full_key)):
        API_KEY_AUTHENTICATIONS.labels(outcome="unknown").inc()
        raise AuthenticationRequired("Unknown API key.", reason="unknown_key")
    if facts.revoked_at is not None:
        API_KEY_AUTHENTICATIONS.labels(outcome="revoked").inc()
        raise AuthenticationRequired("This API key has been revoked.", reason="revoked_key")
    if facts.expires_at is not None and facts.expires_at <= timezone.now():
        API_KEY_AUTHENTICATIONS.labels(outcome="expired").inc()
        raise AuthenticationRequired("This API key has expired.", reason="expired_key")
    if not facts.user_active:
        API_KEY_AUTHENTICATIONS.labels(outcome="inactive_user").inc()
        raise AuthenticationRequired("This API key's owner account is disabled.", reason="inactive_user")
    child(API_KEY_AUTHENTICATIONS, "ok").inc()
    return Principal(
        user_id=facts.user_id,
        api_key_id=facts.id,
        scopes=facts.scopes,
        policy_id=facts.policy_id,
        prefix=facts.prefix,
        allowed_models=facts.allowed_models,
    )


# Per-process cache of key rows: prefix -> facts. Bounded; entries live GATEWAY_KEY_CACHE_S.
_keys: LocalCache[str, _KeyFacts] = LocalCache("api_keys", ttl=lambda: settings.GATEWAY_KEY_CACHE_S)
_background: set[asyncio.Task[Any]] = set()


def forget_cached_keys() -> None:
    _keys.clear()


async def _facts_from_db(prefix: str) -> _KeyFacts | None:
    """The key's row, cached; while the database is unreachable, the last row this process saw.

    Without one: ServiceUnavailable (503). With one, a hung database costs at most LOAD_WAIT_S.
    """
    stale = _keys.get_stale(prefix)
    load = asyncio.ensure_future(db(_facts_sync)(prefix))
    try:
        if stale is MISSING:
            facts = await load
        else:
            facts = await asyncio.wait_for(asyncio.shield(load), LOAD_WAIT_S)
    except (DatabaseError, TimeoutError) as exc:
        load.add_done_callback(lambda f: f.cancelled() or f.exception())  # never an unobserved error
        if stale is MISSING:
            raise ServiceUnavailable(
                "API keys cannot be checked right now; try again shortly.", headers={"Retry-After": "5"}
            ) from None
        return _keys.fallback(prefix, exc)
    if facts is not None:
        _keys.set(prefix, facts)
    else:
        _keys.pop(prefix)
    return facts


async def _revoked_in_redis(key_id: int) -> bool | None:
    """True/False from Redis; None when Redis cannot answer (the caller re-reads the database)."""
    if not redis_enabled():
        return None
    try:
        return bool(await redis_call(lambda r: r.sismember(revoked_set_key(), str(key_id))))
    except Exception:  # any Redis/socket failure: fall back to the database, never fail open
        return None


async def authenticate_bearer(
    authorization_header: str | None, *, defer_revocation_check: bool = False
) -> Principal | None:
    """The principal of a bearer API key; None when the request carries no bearer key.

    Raises AuthenticationRequired (401) for a malformed, unknown, expired or revoked key or
    a disabled owner. Async end to end: the database is read only on a cache miss.

    ``defer_revocation_check``: for a key served from the cache, do not ask Redis here; the
    principal comes back with ``revocation_pending`` and the caller's ``admit()`` asks in its
    own round trip (refusing a revoked key before anything is generated). Only for callers
    that always go through ``admit()`` before answering.
    """
    deferred = False
    full_key = parse_bearer(authorization_header)
    if full_key is None:
        return None
    prefix = full_key[: len(KEY_PREFIX) + PREFIX_CHARS]
    cached = _keys.get(prefix)
    facts = None if cached is MISSING else cached
    reload = facts is None
    if facts is not None and defer_revocation_check and redis_enabled():
        deferred = True
    elif facts is not None:
        revoked = await _revoked_in_redis(facts.id)
        if revoked is None:
            reload = True  # cannot confirm: ask the source of truth
        elif revoked:
            _keys.pop(prefix)
            API_KEY_AUTHENTICATIONS.labels(outcome="revoked").inc()
            raise AuthenticationRequired("This API key has been revoked.", reason="revoked_key")
    if reload:
        facts = await _facts_from_db(prefix)
    principal = _verify(facts, full_key)
    assert facts is not None
    now = timezone.now()
    if facts.last_used_at is None or now - facts.last_used_at >= LAST_USED_EVERY:
        # Off the hot path: the answer does not wait for this write.
        facts.last_used_at = now
        task = asyncio.get_running_loop().create_task(_touch_last_used(facts.id, now))
        _background.add(task)
        task.add_done_callback(_background.discard)
    return replace(principal, revocation_pending=True) if deferred else principal


async def confirm_not_revoked(prefix: str, *, revoked_in_redis: bool | None) -> None:
    """The deferred revocation check (see authenticate_bearer), answered by admit().

    ``revoked_in_redis``: the SISMEMBER answer, or None when Redis could not answer, in
    which case the database decides (never fail open on revocation). Raises
    AuthenticationRequired (401) for a revoked key (or one that stopped being valid).
    """
    if revoked_in_redis is None:
        facts = await _facts_from_db(prefix)
        if facts is not None and facts.revoked_at is None and facts.user_active:
            return
    elif not revoked_in_redis:
        return
    _keys.pop(prefix)
    API_KEY_AUTHENTICATIONS.labels(outcome="revoked").inc()
    raise AuthenticationRequired("This API key has been revoked.", reason="revoked_key")


async def _touch_last_used(key_id: int, now: datetime) -> None:
    try:
        await db(_touch_last_used_sync)(key_id, now)
    except Exception as exc:
        # A database outage is logged where it is seen (monitoring.outages), not per key use.
        log.warning("could not record API key last use", exc_info=not is_unreachable_error(exc))


def authenticate_bearer_sync(authorization_header: str | None) -> tuple[Any, Principal] | None:
    """Synchronous variant for DRF: reads the database every time, returns (user, principal)."""
    from django.contrib.auth import get_user_model

    full_key = parse_bearer(authorization_header)
    if full_key is None:
        return None
    facts = _facts_sync(full_key[: len(KEY_PREFIX) + PREFIX_CHARS])
    principal = _verify(facts, full_key)
    now = timezone.now()
    if facts is not None and (facts.last_used_at is None or now - facts.last_used_at >= LAST_USED_EVERY):
        _touch_last_used_sync(principal.api_key_id, now)
    user = get_user_model().objects.get(pk=principal.user_id)
    return user, principal


# --- DRF ------------------------------------------------------------------------------------


class APIKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer vhk_...``: request.user is the key's owner, request.auth the Principal."""

    def authenticate(self, request: Any) -> tuple[Any, Principal] | None:
        try:
            return authenticate_bearer_sync(request.META.get("HTTP_AUTHORIZATION"))
        except AuthenticationRequired as exc:
            raise exceptions.AuthenticationFailed(str(exc), code=exc.extra.get("reason")) from None

    def authenticate_header(self, request: Any) -> str:
        # Makes DRF answer 401 (not 403) with a WWW-Authenticate challenge.
        return 'Bearer realm="api"'


def HasScope(*scopes: str) -> type[BasePermission]:
    """A DRF permission class: API-key requests need every scope listed.

    Session-authenticated (browser/admin) requests pass: their rights come from Django
    permissions, which the view checks with its other permission classes.
    Usage: ``permission_classes = [IsAuthenticated, HasScope("knowledge:read")]``.
    """

    class _HasScope(BasePermission):
        message = f"This API key lacks the scope(s): {', '.join(scopes)}."

        def has_permission(self, request: Any, view: Any) -> bool:
            if isinstance(request.auth, Principal):
                return request.auth.has_scopes(*scopes)
            return bool(request.user and request.user.is_authenticated)

    _HasScope.__name__ = f"HasScope({', '.join(scopes)})"
    return _HasScope


def require_scope(principal: Principal | None, scope: str) -> None:
    """For non-DRF adapters (OpenAI endpoint): a key without ``scope`` gets a 403."""
    from chat.errors import PermissionDenied

    if principal is not None and scope not in principal.scopes:
        raise PermissionDenied(f"This API key lacks the scope: {scope}.", reason="missing_scope")


# --- subjects ------------------------------------------------------------------------------


def client_ip(meta_or_scope: dict[str, Any]) -> str:
    """The client address from a Django request.META or an ASGI scope.

    ``X-Forwarded-For`` counts only from the proxies in TRUSTED_PROXIES (config.proxies):
    a client that writes its own header still gets its own TCP address.
    """
    return proxies.client_ip(meta_or_scope)


def subject_for(
    *, principal: Principal | None, user: Any = None, ip: str = "", session_key: str | None = None
) -> Subject:
    """The limiter/cache Subject of a request (API key, logged-in user, or anonymous)."""
    if principal is not None:
        return Subject(
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
            api_key_policy_id=principal.policy_id,
            ip=ip,
            revocation_prefix=principal.prefix if principal.revocation_pending else "",
            key_models=principal.allowed_models,
        )
    if user is not None and getattr(user, "is_authenticated", False):
        return Subject(user_id=user.pk, ip=ip, session_key=session_key)
    return Subject(ip=ip, session_key=session_key, is_anonymous=True)
