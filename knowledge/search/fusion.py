"""Reciprocal rank fusion of the lexical and semantic rankings (done in the application).

RRF (Cormack et al., 2009): score(d) = sum over rankings of weight / (k + rank(d)),
rank starting at 1. It needs no score normalisation, which matters here: BM25
scores are unbounded and differ between engines, cosine scores are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.search.base import SearchResult
from knowledge.types import ChunkRef


@dataclass(frozen=True, slots=True)
class FusedHit:
    chunk: ChunkRef
    score: float
    lexical_rank: int | None
    semantic_rank: int | None
    # The engines' own scores (BM25; cosine similarity scaled to 0..1), for relevance decisions.
    lexical_score: float | None = None
    semantic_score: float | None = None


def reciprocal_rank_fusion(
    result: SearchResult,
    *,
    k: int = 60,
    lexical_weight: float = 1.0,
    semantic_weight: float = 1.0,
    names_weight: float = 1.0,
) -> list[FusedHit]:
    chunks: dict[int, ChunkRef] = {}
    lexical: dict[int, tuple[int, float]] = {}
    semantic: dict[int, tuple[int, float]] = {}
    names: dict[int, int] = {}
    for rank, hit in enumerate(result.lexical, start=1):
        chunks.setdefault(hit.chunk.chunk_id, hit.chunk)
        lexical.setdefault(hit.chunk.chunk_id, (rank, hit.score))
    for rank, hit in enumerate(result.semantic, start=1):
        chunks.setdefault(hit.chunk.chunk_id, hit.chunk)
        semantic.setdefault(hit.chunk.chunk_id, (rank, hit.score))
    for rank, hit in enumerate(result.names, start=1):
        chunks.setdefault(hit.chunk.chunk_id, hit.chunk)
        names.setdefault(hit.chunk.chunk_id, rank)
    fused = []
    for chunk_id, chunk in chunks.items():
        lex, lex_score = lexical.get(chunk_id, (None, None))
        sem, sem_score = semantic.get(chunk_id, (None, None))
        name = names.get(chunk_id)
        score = (lexical_weight / (k + lex) if lex else 0.0) + (semantic_weight / (k + sem) if sem else 0.0)
        score += names_weight / (k + name) if name else 0.0
        fused.append(FusedHit(chunk, score, lex, sem, lex_score, sem_score))
    # Ties (same score) break on the better single rank, then the chunk id: stable results.
    fused.sort(key=lambda h: (-h.score, min(h.lexical_rank or 10**9, h.semantic_rank or 10**9), h.chunk.chunk_id))
    return fused
