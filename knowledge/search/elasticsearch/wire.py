"""What goes to Elasticsearch and comes back: a chunk's document, one question's searches, their hits,
the name counts, the analyzer recorded in a mapping.

Pure functions of their arguments (no client): the backend sends and receives them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from elasticsearch.dsl import Q, Search

from knowledge.search.base import IndexedChunk, SearchHit, SearchQuery, SearchResult
from knowledge.search.elasticsearch.analysis import (
    BIGRAM,
    NAMES_FIELD,
    SOURCE_EXCLUDES,
    TERMS_FIELD,
    bigram_terms,
    lexical_query,
    names_of,
    names_query,
    own_script_count,
)
from knowledge.text import NameLookup, is_name
from knowledge.types import ChunkRef, SearchFilters


def chunk_source(chunk: IndexedChunk, analyzer: str) -> dict[str, Any]:
    """The document one chunk is written as (``analysis.mapping`` gives its fields' types)."""
    source = {
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "collection_id": chunk.collection_id,
        "ordinal": chunk.ordinal,
        "language": chunk.language,
        "title": chunk.title,
        "content": chunk.text,
        "embedding": np.asarray(chunk.embedding, dtype=np.float32).tolist(),
        "metadata": {
            "source": chunk.source,
            "category": chunk.category,
            "timestamp": chunk.timestamp.isoformat() if chunk.timestamp else None,
        },
    }
    if analyzer == BIGRAM:
        source[TERMS_FIELD] = bigram_terms(chunk.title, chunk.text)
    source[NAMES_FIELD] = names_of(chunk.title, chunk.text)
    return source


def filter_clauses(filters: SearchFilters) -> list[Q]:
    """The metadata filters, as ``bool`` filter clauses (the kNN ``filter`` takes the same)."""
    clauses: list[Q] = []
    if filters.collection_ids is not None:
        clauses.append(Q("terms", collection_id=list(filters.collection_ids)))
    if filters.source:
        clauses.append(Q("term", **{"metadata.source": filters.source}))
    if filters.category:
        clauses.append(Q("term", **{"metadata.category": filters.category}))
    if filters.date_from or filters.date_to:
        bounds = {}
        if filters.date_from:
            bounds["gte"] = filters.date_from.isoformat()
        if filters.date_to:
            bounds["lte"] = filters.date_to.isoformat()
        clauses.append(Q("range", **{"metadata.timestamp": bounds}))
    return clauses


def question_searches(
    alias: str, query: SearchQuery, analyzer: str, names: list[NameLookup], *, timeout_s: float, num_candidates: int
) -> list[Search]:
    """One question's searches, sent in one ``_msearch``: BM25, kNN, then the name query when the
    question has name words (``search_result`` reads the answers in this order)."""
    filters = filter_clauses(query.filters)
    timeout = f"{int(timeout_s * 1000)}ms"
    searches = []
    if query.lexical:
        searches.append(
            Search(index=alias)
            .query(Q("bool", must=[lexical_query(analyzer, query.text)], filter=filters))
            .source(excludes=SOURCE_EXCLUDES)
            .extra(size=query.size, timeout=timeout)
        )
    if query.vector is not None:
        semantic = (
            Search(index=alias)
            .knn(
                field="embedding",
                k=query.size,
                num_candidates=max(num_candidates, query.size),
                query_vector=np.asarray(query.vector, dtype=np.float32).tolist(),
                filter=Q("bool", filter=filters) if filters else None,
            )
            .source(excludes=SOURCE_EXCLUDES)
            .extra(size=query.size)
        )
        searches.append(semantic)
    if query.lexical and names:
        searches.append(
            Search(index=alias)
            .query(Q("bool", must=[names_query(names)], filter=filters))
            .source(excludes=SOURCE_EXCLUDES)
            .extra(size=query.size, timeout=timeout)
        )
    return searches


def ranked_hits(response) -> list[SearchHit]:
    """One search's hits, best first (``content`` left out: ``SOURCE_EXCLUDES``)."""
    hits = []
    for hit in response.hits:
        src = hit.to_dict()
        meta = src.get("metadata") or {}
        ts = meta.get("timestamp")
        hits.append(
            SearchHit(
                ChunkRef(
                    chunk_id=int(src["chunk_id"]),
                    document_id=int(src["document_id"]),
                    collection_id=int(src["collection_id"]),
                    ordinal=int(src.get("ordinal", 0)),
                    text=src.get("content", ""),
                    title=src.get("title", ""),
                    source=meta.get("source") or "",
                    category=meta.get("category") or "",
                    language=src.get("language") or "",
                    timestamp=dt.datetime.fromisoformat(ts) if ts else None,
                ),
                float(hit.meta.score),
            )
        )
    return hits


def search_result(query: SearchQuery, responses: list, names: list[NameLookup]) -> SearchResult:
    """The rankings of ``question_searches``' answers."""
    found = iter(responses)
    lexical = ranked_hits(next(found)) if query.lexical else []
    semantic = ranked_hits(next(found)) if query.vector is not None else []
    by_name = ranked_hits(next(found)) if query.lexical and names else []
    return SearchResult(lexical, semantic, by_name)


def name_count_searches(alias: str, lookups: list[NameLookup]) -> list[dict[str, Any]]:
    """An ``_msearch`` body: the index's chunk count, then each word's count in its own script."""
    body: list[dict[str, Any]] = [{"index": alias}, {"size": 0, "track_total_hits": True}]
    for lookup in lookups:
        body += [{"index": alias}, own_script_count(lookup)]
    return body


def name_verdicts(lookups: list[NameLookup], responses: list[dict[str, Any]]) -> dict[str, bool]:
    """Whether each word is a name (``knowledge.text.is_name``), from ``name_count_searches``' answers."""
    total = responses[0].get("hits", {}).get("total", {}).get("value", 0)
    return {
        lookup.own: is_name(response.get("hits", {}).get("total", {}).get("value", 0), total)
        for lookup, response in zip(lookups, responses[1:], strict=True)
    }


def recorded_analyzer(mapping_body: dict[str, Any]) -> str:
    """The analyzer in the ``_meta`` of a get-mapping answer (indexes made before it was recorded: standard)."""
    metas = [m["mappings"].get("_meta", {}) for m in mapping_body.values()]
    return str(metas[0].get("analyzer") or "standard") if metas else "standard"
