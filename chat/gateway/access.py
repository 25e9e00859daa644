"""Who may use which model: allowed-model lists of users, groups of users and API keys.

A user's allowed models are the union of the non-empty ``ModelAccess`` lists on the user
and on the user's groups; when none states a list, every model (``None``). An API key
narrows its owner's set with its own ``allowed_models`` (empty: the owner's). Lists hold
model-group ids. The hot path reads them from memory: a key's set rides in its cached
row (``GATEWAY_KEY_CACHE_S``), a user's set is cached per process for as long.
"""

from __future__ import annotations

from collections.abc import Iterable

from channels.db import database_sync_to_async
from django.conf import settings

from config.local_cache import MISSING, LocalCache

Allowed = frozenset[int] | None  # None: every model


def _ids(values: Iterable[object]) -> set[int]:
    out: set[int] = set()
    for v in values or ():
        try:
            out.add(int(v))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            continue  # a hand-edited list with junk: ignore the entry, never widen access
    return out


def user_allowed_sync(user_id: int) -> Allowed:
    """The models ``user_id`` may use (database read; the async path caches it)."""
    from django.db.models import Q

    from chat.gateway.models import ModelAccess

    lists = ModelAccess.objects.filter(Q(user_id=user_id) | Q(group__user__id=user_id)).values_list(
        "allowed_models", flat=True
    )
    stated = [_ids(v) for v in lists if v]
    if not stated:
        return None
    return frozenset().union(*stated)


def key_allowed(key_models: Iterable[object], owner: Allowed) -> Allowed:
    """An API key's set: its own list within its owner's (empty list: the owner's)."""
    own = _ids(key_models)
    if not own:
        return owner
    return frozenset(own) if owner is None else frozenset(own) & owner


_users: LocalCache[int, Allowed] = LocalCache("model_access", ttl=lambda: settings.GATEWAY_KEY_CACHE_S)


async def user_allowed(user_id: int) -> Allowed:
    """``user_allowed_sync`` cached per process for GATEWAY_KEY_CACHE_S (last-known-good on DB errors)."""
    cached = _users.get(user_id)
    if cached is not MISSING:
        return cached
    return await _users.aget_or_load(
        user_id, lambda: database_sync_to_async(user_allowed_sync)(user_id), fallback_on=(Exception,)
    )


def forget_access() -> None:
    """Admin edits apply at once in this process (others within GATEWAY_KEY_CACHE_S)."""
    _users.clear()
