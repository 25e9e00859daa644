"""Value types of the retrieval contract (used by chat and by the REST search API)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SearchFilters:
    collection_ids: tuple[int, ...] | None = None  # None: every collection the caller may read
    source: str | None = None
    category: str | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    chunk_id: int
    document_id: int
    collection_id: int
    ordinal: int
    text: str
    score: float
    title: str
    source: str
    category: str
    language: str
    url: str  # where a citation links to (the document's page)
    timestamp: dt.datetime | None = None  # the document's date, when it has one
    # 1-based rank in each list before fusion (None: not in that list); for debugging and evaluation.
    lexical_rank: int | None = None
    semantic_rank: int | None = None
