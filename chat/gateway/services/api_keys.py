"""API-key writes: create (the full key is shown once) and revoke (at once, in every process)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from redis.exceptions import RedisClusterException, RedisError

from chat.gateway.auth import generate_key, revoked_set_key
from chat.gateway.models import API_KEY_SCOPES, APIKey
from config.errors import PermissionDenied
from config.redis import redis_enabled, sync_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    api_key: APIKey
    full_key: str  # shown once; only its hash is stored


def apikey_create(
    *,
    name: str,
    user: Any,
    scopes: list[str],
    policy: Any = None,
    expires_at: Any = None,
    created_by: Any = None,
    allowed_models: list[int] | None = None,
) -> CreatedKey:
    """A new API key for ``user``. The returned full key is never retrievable again.

    ``created_by``: the person asking (admin); only a superuser may create a key for another
    user (a key acts as its owner). None: an operator's shell (``manage.py create_api_key``).
    ``allowed_models``: model-group ids the key may use (within its owner's); None or empty: all.
    """
    if created_by is not None and user != created_by and not getattr(created_by, "is_superuser", False):
        raise PermissionDenied("Only a superuser may create a key for another user.", reason="not_superuser")
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
        allowed_models=sorted({int(m) for m in allowed_models or []}),
    )
    return CreatedKey(row, full)


def apikey_revoke(*, api_key: APIKey) -> None:
    """Revoke at once, in every process: the row (source of truth) and the Redis revoked set."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    apikey_publish_revocation(api_key_id=api_key.pk)


def apikey_publish_revocation(*, api_key_id: int) -> bool:
    """Add a key id to the Redis revoked set (processes that cached the key refuse it at once).

    When Redis is down, processes re-read the database within GATEWAY_KEY_CACHE_S instead.
    """
    if not redis_enabled():
        return False
    try:
        with sync_redis() as r:
            r.sadd(revoked_set_key(), str(api_key_id))
    except (RedisError, RedisClusterException, OSError):
        log.warning("could not publish API key revocation to Redis", exc_info=True)
        return False
    return True
