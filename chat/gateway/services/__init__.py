"""The gateway's services: what the chat pipeline, the admin and the commands call.

- ``admission``: ``admit`` / ``settle`` (rate limits + cache lookup in one Redis round
  trip) and the Redis-down state that makes an outage degrade instead of hang;
- ``response_cache``: the cache key of a request, ``cache_put``, operator purges;
- ``api_keys``: create and revoke keys;
- ``redis_admin``: resets and prefix purges of the gateway's Redis keys;
- ``action_limits``: bounds on new anonymous sessions and new conversations.

Value types (``Subject``, ``Admission``, ``CachedAnswer``) are in ``chat.gateway.types``.
"""

from chat.gateway.services.action_limits import (
    check_action,
    check_action_sync,
    conversation_checks,
    session_checks,
)
from chat.gateway.services.admission import admit, redis_failure_seen, redis_state_reset, redis_usable, settle
from chat.gateway.services.api_keys import CreatedKey, apikey_create, apikey_publish_revocation, apikey_revoke
from chat.gateway.services.redis_admin import keys_purge_prefix, ratelimit_reset
from chat.gateway.services.response_cache import (
    cache_delete,
    cache_flush,
    cache_key_for,
    cache_purge_stale,
    cache_put,
    cache_stats_reset,
    cache_ttl,
    cache_ttl_set,
)
from chat.gateway.types import Admission, CachedAnswer, Subject

__all__ = [
    "Admission",
    "CachedAnswer",
    "CreatedKey",
    "Subject",
    "admit",
    "apikey_create",
    "apikey_publish_revocation",
    "apikey_revoke",
    "cache_delete",
    "cache_flush",
    "cache_key_for",
    "cache_purge_stale",
    "cache_put",
    "cache_stats_reset",
    "cache_ttl",
    "cache_ttl_set",
    "check_action",
    "check_action_sync",
    "conversation_checks",
    "keys_purge_prefix",
    "ratelimit_reset",
    "redis_failure_seen",
    "redis_state_reset",
    "redis_usable",
    "session_checks",
    "settle",
]
