"""Which knowledge collections an answer may draw on, per caller.

Retrieval is always scoped to the collections the caller may read (the knowledge
app decides: anonymous -> public ones; users -> public + granted; staff -> all).
The answer is cached per process for CHAT_SETTINGS_TTL_S, so the request path
does not query the database for it on every message; a revoked grant therefore
stops applying within that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from chat.asyncdb import db
from chat.errors import NotFound
from config.local_cache import LocalCache
from knowledge import selectors as knowledge_selectors


@dataclass(frozen=True, slots=True)
class Readable:
    ids: frozenset[int]
    by_slug: dict[str, int]

    def resolve(self, requested: tuple[int | str, ...] | None) -> tuple[int, ...]:
        """The collection ids to search: the requested ones (ids or slugs) if readable, else all readable.

        An unknown or unreadable collection is a 404 (indistinguishable, so ids cannot be probed).
        """
        if not requested:
            return tuple(sorted(self.ids))
        out: list[int] = []
        for item in requested:
            cid = self.by_slug.get(item) if isinstance(item, str) else item
            if cid is None or cid not in self.ids:
                raise NotFound(f"No such collection: {item}.")
            out.append(cid)
        return tuple(sorted(set(out)))


_readable: LocalCache[tuple, Readable] = LocalCache("collection_access", ttl=lambda: settings.CHAT_SETTINGS_TTL_S)


def _cache_key(principal: Any) -> tuple:
    api_key_id = getattr(principal, "api_key_id", None)
    if api_key_id is not None:
        return ("key", api_key_id)
    if principal is None or not getattr(principal, "is_authenticated", False):
        return ("anon",)
    return ("user", principal.pk)


def _load(principal: Any) -> Readable:
    rows = knowledge_selectors.collection_list(principal=principal).values_list("id", "slug")
    by_slug = {slug: cid for cid, slug in rows}
    return Readable(ids=frozenset(by_slug.values()), by_slug=by_slug)


async def readable(principal: Any) -> Readable:
    return await _readable.aget_or_load(
        _cache_key(principal), lambda: db(_load)(principal), fallback_on=(DatabaseError,)
    )


def forget() -> None:
    _readable.clear()
