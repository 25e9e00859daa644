"""Public interface of the knowledge app (writes live here; reads in selectors.py).

PROVISIONAL: ``retrieve`` is the contract the chat layer codes against.
"""

from __future__ import annotations

from knowledge.types import RetrievedChunk, SearchFilters


async def retrieve(
    query: str,
    *,
    filters: SearchFilters | None = None,
    top_k: int = 5,
    rerank: bool | None = None,
) -> list[RetrievedChunk]:
    """Hybrid BM25 + kNN retrieval, fused with RRF, optionally reranked. Best first."""
    return []
