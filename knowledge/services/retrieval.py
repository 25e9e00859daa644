"""Retrieval: hybrid lexical + semantic search over the index, fused, optionally reranked.

What chat and the REST search API call. Never touches the database with the
Elasticsearch backend; the query is embedded by the inference layer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from django.conf import settings

from inference import services as inference
from knowledge.models import document_url
from knowledge.search import get_search_backend
from knowledge.search.base import BaseSearchBackend, SearchQuery
from knowledge.search.fusion import FusedHit, reciprocal_rank_fusion
from knowledge.text import normalize_text
from knowledge.types import RetrievedChunk, SearchFilters
from monitoring import tracing
from monitoring.metrics import RETRIEVAL_DURATION

logger = logging.getLogger(__name__)


# What a search ranks by: both lists fused (the default), or one of them alone (evaluation, debugging).
HYBRID, LEXICAL, SEMANTIC = "hybrid", "lexical", "semantic"
MODES = (HYBRID, LEXICAL, SEMANTIC)


def _to_retrieved(hit: FusedHit, score: float, rerank_score: float | None = None) -> RetrievedChunk:
    return RetrievedChunk(
        chunk=hit.chunk,
        score=score,
        url=document_url(hit.chunk.document_id),
        lexical_rank=hit.lexical_rank,
        semantic_rank=hit.semantic_rank,
        semantic_score=hit.semantic_score,
        rerank_score=rerank_score,
    )


@tracing.span("retrieval")
async def retrieve(
    query: str,
    *,
    filters: SearchFilters | None = None,
    top_k: int = 5,
    rerank: bool | None = None,
    mode: str = HYBRID,
    backend: BaseSearchBackend | None = None,
    vector: np.ndarray | None = None,
) -> list[RetrievedChunk]:
    """Hybrid BM25 + kNN retrieval, fused with RRF, optionally reranked. Best first.

    ``filters.collection_ids=None`` searches every collection: callers acting for a
    user pass ``readable_collection_ids(principal)``. ``rerank=None`` follows
    KNOWLEDGE_RERANK_DEFAULT; reranking runs only when the inference layer has a
    reranker and degrades to the fused order when it fails. When the query cannot be
    embedded the search is lexical only. ``mode`` ranks by one list alone (``lexical``,
    ``semantic``); ``backend`` overrides the configured engine (the evaluation compares
    several); ``vector`` is the query's embedding when the caller has it already. Raises
    ``SearchUnavailable`` when the search engine fails. Never touches the database with the
    Elasticsearch backend.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    started = time.perf_counter()
    query = normalize_text(query or "")[: settings.KNOWLEDGE_MAX_QUERY_CHARS]
    if not query:
        return []
    top_k = max(1, min(int(top_k), settings.KNOWLEDGE_MAX_TOP_K))
    filters = filters or SearchFilters()
    backend = backend or get_search_backend()
    tracing.set_attributes(**{"retrieval.backend": backend.name, "retrieval.top_k": top_k})
    # Steps as child spans of "retrieval": the query vector (the semantic side), then one search
    # round trip for both rankings (one _msearch with Elasticsearch), fusion, rerank.
    if mode == LEXICAL:
        vector = None
    elif vector is None:
        with tracing.span("retrieval.embed_query"):
            try:
                vector = await inference.embed_query(query)
            except Exception as exc:  # the embedding service is down: lexical search still answers
                logger.warning("query embedding failed, searching lexically only: %s", exc)
    candidates = max(settings.KNOWLEDGE_SEARCH_CANDIDATES, top_k)
    t0 = time.perf_counter()
    # A dense-only search whose query could not be embedded falls back to the lexical list.
    lexical = mode != SEMANTIC or vector is None
    with tracing.span("retrieval.search", **{"retrieval.candidates": candidates}) as span:
        result = await backend.search(SearchQuery(query, vector, filters, candidates, lexical=lexical))
        if span.is_recording():
            span.set_attributes(
                {"retrieval.lexical_hits": len(result.lexical), "retrieval.semantic_hits": len(result.semantic)}
            )
    RETRIEVAL_DURATION.labels(stage="search", backend=backend.name).observe(time.perf_counter() - t0)
    with tracing.span("retrieval.fusion"):
        fused = reciprocal_rank_fusion(
            result,
            k=settings.KNOWLEDGE_RRF_K,
            lexical_weight=settings.KNOWLEDGE_RRF_LEXICAL_WEIGHT,
            semantic_weight=settings.KNOWLEDGE_RRF_SEMANTIC_WEIGHT,
            names_weight=settings.KNOWLEDGE_RRF_NAMES_WEIGHT,
        )
    use_rerank = (settings.KNOWLEDGE_RERANK_DEFAULT if rerank is None else rerank) and inference.reranker_available()
    # Only the hits that can be kept (or reranked) need their text: some engines leave it out.
    kept = fused[: max(top_k, settings.KNOWLEDGE_RERANK_CANDIDATES) if use_rerank else top_k]
    chunks = await backend.with_texts([hit.chunk for hit in kept])
    ranked: list[tuple[FusedHit, float, float | None]] = [
        (replace(hit, chunk=chunk), hit.score, None) for hit, chunk in zip(kept, chunks, strict=True)
    ]
    if use_rerank and ranked:
        pool = ranked
        t1 = time.perf_counter()
        try:
            with tracing.span("retrieval.rerank", **{"retrieval.rerank_candidates": len(pool)}):
                scores = await inference.rerank(query, [hit.chunk.text for hit, _, _ in pool])
            if len(scores) != len(pool):
                raise ValueError(f"{len(scores)} scores for {len(pool)} passages")
            ranked = sorted(
                ((hit, float(s), float(s)) for (hit, _, _), s in zip(pool, scores, strict=True)), key=lambda p: -p[1]
            )
        except Exception as exc:  # reranking is an improvement, not a requirement
            logger.warning("rerank failed, keeping the fused order: %s", exc)
        RETRIEVAL_DURATION.labels(stage="rerank", backend=backend.name).observe(time.perf_counter() - t1)
    RETRIEVAL_DURATION.labels(stage="total", backend=backend.name).observe(time.perf_counter() - started)
    return [_to_retrieved(hit, score, rerank_score) for hit, score, rerank_score in ranked[:top_k]]


def retrieve_sync(query: str, **kwargs: Any) -> list[RetrievedChunk]:
    """``retrieve`` for synchronous callers (REST views, commands)."""
    return async_to_sync(retrieve)(query, **kwargs)
