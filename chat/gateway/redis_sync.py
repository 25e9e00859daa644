"""Helpers for the gateway's synchronous Redis work (admin pages, commands).

The client itself comes from config.redis.sync_redis (one place builds Redis clients).
"""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a literal prefix matches only itself."""
    for ch in "\\*?[]":
        text = text.replace(ch, "\\" + ch)
    return text
