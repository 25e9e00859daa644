"""The search backend interface (the Wagtail pattern): every engine implements this class.

A backend holds chunks (text, metadata and the embedding) in versioned concrete
indexes behind an alias. Writes go to the alias unless an ``index`` is named
(reindexing fills a new concrete index, then ``swap_alias`` makes it live
atomically). ``search`` returns two ranked lists, lexical (BM25) and semantic
(kNN); fusing them is the retrieval service's job, so every engine fuses the same way.

Write methods are synchronous (the ingestion worker, commands and admin call
them); ``search`` is async (the request path; sync callers use ``retrieve_sync``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.utils import timezone

from knowledge.types import ChunkRef, SearchFilters


@dataclass(frozen=True, slots=True)
class IndexedChunk(ChunkRef):
    """What the index stores for one chunk: the chunk and its vector."""

    embedding: np.ndarray | None = None  # float32 (dim,), L2-normalised


@dataclass(frozen=True, slots=True)
class SearchHit:
    chunk: ChunkRef
    score: float


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    vector: np.ndarray | None  # None: no semantic ranking (lexical only, or the embedding service is down)
    filters: SearchFilters = field(default_factory=SearchFilters)
    size: int = 50  # candidates per list
    lexical: bool = True  # False: no lexical ranking (a dense-only search)


@dataclass(frozen=True, slots=True)
class SearchResult:
    lexical: list[SearchHit]
    semantic: list[SearchHit]
    # Cross-script name matches (knowledge.text.name_lookups): "Haedam" for 해담시, 달빛군 for Dalbit.
    names: list[SearchHit] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """What the admin index page shows."""

    backend: str
    alias: str
    concrete_index: str | None  # None: the alias does not exist yet
    analyzer: str | None
    embedding_model: str | None
    embedding_dim: int | None
    chunk_count: int
    document_count: int
    other_indexes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def new_index_name(alias: str) -> str:
    """``<alias>-v<UTC timestamp with microseconds>``: sortable, unique per build."""
    return f"{alias}-v{timezone.now().astimezone(dt.UTC):%Y%m%d%H%M%S%f}"


class BaseSearchBackend:
    """Interface and shared helpers. ``params`` is the backend's SEARCH_BACKENDS entry."""

    name = "base"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)
        self.alias: str = self.params.get("INDEX", "vh-chunks")

    # --- index management ---------------------------------------------------------

    def ensure_index(self) -> str:
        """Create the first concrete index behind the alias when there is none; return the live index."""
        raise NotImplementedError

    def create_index(self) -> str:
        """Create a new empty concrete index (not yet behind the alias) and return its name."""
        raise NotImplementedError

    def swap_alias(self, index: str, *, delete_old: bool = True) -> list[str]:
        """Point the alias at ``index`` atomically; return (and by default delete) the previous indexes."""
        raise NotImplementedError

    def delete_index(self, index: str) -> None:
        raise NotImplementedError

    def reset_index(self) -> str:
        """Drop every index of this alias and start an empty one (tests, `reindex --reset`)."""
        for name in self.list_indexes():
            self.delete_index(name)
        return self.ensure_index()

    def list_indexes(self) -> list[str]:
        """Concrete indexes that belong to this alias (live or not), oldest first."""
        raise NotImplementedError

    def info(self) -> IndexInfo:
        raise NotImplementedError

    def refresh(self, index: str | None = None) -> None:
        """Make recent writes visible to search (no-op where writes are immediately visible)."""

    # --- writes -------------------------------------------------------------------

    def add(self, chunk: IndexedChunk, *, index: str | None = None) -> None:
        self.add_bulk([chunk], index=index)

    def add_bulk(self, chunks: Iterable[IndexedChunk], *, index: str | None = None) -> int:
        """Insert or replace chunks (by chunk_id); return how many were written."""
        raise NotImplementedError

    def delete(self, chunk_ids: Iterable[int], *, index: str | None = None) -> None:
        raise NotImplementedError

    def delete_document(self, document_id: int, *, index: str | None = None) -> None:
        """Remove every chunk of a document."""
        raise NotImplementedError

    def document_chunk_counts(self, *, index: str | None = None) -> dict[int, int]:
        """Chunks per document id in the index (admin consistency check, reindex reconciliation)."""
        raise NotImplementedError

    # --- reads --------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchResult:
        """Both rankings; a hit's ``text`` may be empty (engines that keep it out of the ranking's
        answer): ``with_texts`` fills in the hits that are kept."""
        raise NotImplementedError

    async def with_texts(self, chunks: list[ChunkRef]) -> list[ChunkRef]:
        """``chunks`` with their text (the same order); engines whose hits carry it return them as they are."""
        return chunks

    async def ping(self) -> str:
        """Readiness probe: a short detail when usable, raise otherwise."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections bound to the running event loop."""

    def close(self) -> None:
        """Release synchronous connections."""
