"""Value types of the retrieval contract (used by the search backends, chat and the REST search API).

``ChunkRef`` is the one description of a chunk outside the database: what the index
stores (``IndexedChunk`` adds the vector), what a search hit carries, what retrieval
returns (``RetrievedChunk`` adds the score and ranks) and what a prompt cites.
"""

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
class ChunkRef:
    """A chunk with its document's metadata: enough to cite it without the database."""

    chunk_id: int
    document_id: int
    collection_id: int
    ordinal: int
    text: str
    title: str
    source: str
    category: str
    language: str
    timestamp: dt.datetime | None = None  # the document's date, when it has one


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """One retrieval result, best first."""

    chunk: ChunkRef
    score: float
    url: str  # where a citation links to (the document's page)
    # 1-based rank in each list before fusion (None: not in that list); for debugging and evaluation.
    lexical_rank: int | None = None
    semantic_rank: int | None = None
    # The query-passage similarity of the dense ranking (cosine scaled to 0..1; None: not in it),
    # and the reranker's score when a reranker ordered the results: relevance signals.
    semantic_score: float | None = None
    rerank_score: float | None = None
