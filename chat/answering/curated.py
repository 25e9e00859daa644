"""Curated replies: an operator's answer given verbatim when a question matches its question.

The replies' question vectors are held per process (reloaded every CHAT_SETTINGS_TTL_S, at
once in the process that saved one); matching is one matrix product with the question's
vector, which retrieval computes anyway. Counted in ``chat_curated_replies_total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError

from chat.asyncdb import db
from config.local_cache import LocalCache
from inference import services as inference
from knowledge.models import document_url, vector_from_bytes


@dataclass(frozen=True, slots=True)
class CuratedMatch:
    reply_id: int
    answer: str
    similarity: float
    source_id: int | None
    source_title: str

    def citations(self) -> list[dict[str, Any]]:
        """The reply's source as the answer's one citation (none when the reply names no document)."""
        if self.source_id is None:
            return []
        return [
            {
                "n": 1,
                "title": self.source_title,
                "snippet": "",
                "url": document_url(self.source_id),
                "document_id": self.source_id,
                "chunk_id": None,
                "score": round(self.similarity, 4),
                "cited": True,
            }
        ]

    @property
    def text(self) -> str:
        return f"{self.answer.strip()} [1]" if self.source_id is not None else self.answer.strip()


@dataclass(frozen=True, slots=True)
class _Index:
    ids: list[int]
    vectors: np.ndarray  # (n, dim) float32
    answers: list[str]
    sources: list[tuple[int | None, str]]


_index: LocalCache[str, _Index] = LocalCache("curated_replies", ttl=lambda: settings.CHAT_SETTINGS_TTL_S, maxsize=1)
_KEY = "replies"


def invalidate(**_signal_kwargs: Any) -> None:
    """Forget the replies (also the receiver of CuratedReply saves and deletes)."""
    _index.clear()


def _load() -> _Index:
    from chat.models import CuratedReply

    rows = list(
        CuratedReply.objects.filter(enabled=True, embedding_model=inference.embedding_model_name())
        .exclude(embedding=b"")
        .select_related("source")
        .order_by("pk")
    )
    vectors = [vector_from_bytes(bytes(r.embedding)) for r in rows]
    dim = vectors[0].shape[0] if vectors else 0
    return _Index(
        ids=[r.pk for r in rows],
        vectors=np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), dtype=np.float32),
        answers=[r.answer for r in rows],
        sources=[(r.source_id, r.source.display_title if r.source else "") for r in rows],
    )


async def best_match(vector: np.ndarray | None, threshold: float) -> CuratedMatch | None:
    """The enabled reply whose question is most similar to the asked one, if at least ``threshold``."""
    if vector is None:
        return None
    index = await _index.aget_or_load(_KEY, lambda: db(_load)(), fallback_on=(DatabaseError,))
    if not index.ids or index.vectors.shape[1] != vector.shape[0]:
        return None
    similarities = index.vectors @ vector.astype(np.float32)
    best = int(np.argmax(similarities))
    similarity = float(similarities[best])
    if similarity < threshold:
        return None
    source_id, title = index.sources[best]
    return CuratedMatch(index.ids[best], index.answers[best], similarity, source_id, title)
