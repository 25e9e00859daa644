"""Operator actions on the gateway's Redis keys (admin pages, commands): resets and purges.

Synchronous, through ``config.redis.sync_redis`` (a cluster client visits every primary).
"""

from __future__ import annotations

from chat.gateway import limiter
from config.redis import glob_escape, key, sync_redis


def ratelimit_reset(*, subjects: list[str]) -> int:
    """Delete every rate-limit key of these subjects (all windows); returns the keys removed."""
    removed = 0
    with sync_redis() as r:
        for subject in subjects:
            found = list(r.scan_iter(match=limiter.subject_pattern(subject), count=500))
            if found:
                removed += int(r.unlink(*found))
            limiter.local_limiter.reset(subject)
    return removed


def keys_purge_prefix(*, prefix: str, batch: int = 500) -> int:
    """UNLINK every key under ``<platform prefix>:<prefix>`` in batches (every cluster master).

    ``prefix`` is relative to the platform namespace and must not be empty (a guard against
    wiping sessions, history and limits by accident); returns the number of keys removed.
    """
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
