"""The embedded search backend: no extra service, the database holds the index.

Index entries live in ``LocalIndexEntry`` rows (shared by the web server and the
worker through the database); each process scores against an in-memory copy that
it reloads when the index's ``generation`` counter moved (one small query per
search). Lexical scoring is BM25 over character bigrams, which needs no Korean
morphological analyser: "철거보조금" and "철거 보조금을" share the bigrams 철거, 보조,
조금. Semantic scoring is cosine similarity over the stored vectors (numpy).
Sized for the embedded run (up to ~100k chunks); production uses Elasticsearch.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from asgiref.sync import sync_to_async
from cachetools import LRUCache
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q

from knowledge.models import LocalIndex, LocalIndexEntry, vector_from_bytes, vector_to_bytes
from knowledge.search.base import (
    BaseSearchBackend,
    IndexedChunk,
    IndexInfo,
    SearchHit,
    SearchQuery,
    SearchResult,
    new_index_name,
)
from knowledge.text import is_name, lexical_terms, name_lookups, name_terms
from knowledge.types import ChunkRef, SearchFilters

ANALYZER = "char-bigram"
_K1 = 1.2
_B = 0.75


@dataclass
class _Snapshot:
    generation: int
    chunks: list[ChunkRef]
    collection_ids: np.ndarray
    sources: np.ndarray
    categories: np.ndarray
    timestamps: np.ndarray  # epoch seconds, NaN when the document has no date
    vectors: np.ndarray  # (n, dim) float32
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term -> (rows, term frequencies)
    doc_len: np.ndarray
    avg_len: float
    name_rows: dict[str, np.ndarray]  # cross-script name term -> rows (knowledge.text.name_terms)
    romanized: list[str]  # the sorted r: terms, for prefix lookups
    # Question word (its own-script family) -> is it a name here; a snapshot never changes, so
    # the verdict holds for its life (questions repeat the same common words). Bounded: strangers
    # may ask anything.
    name_verdicts: LRUCache[str, bool] = field(default_factory=lambda: LRUCache(maxsize=20_000))

    @classmethod
    def build(cls, generation: int, rows: list[tuple], dim: int) -> _Snapshot:
        chunks: list[ChunkRef] = []
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        term_rows: dict[str, list[tuple[int, int]]] = defaultdict(list)
        names: dict[str, set[int]] = defaultdict(set)
        doc_len = np.zeros(len(rows), dtype=np.float32)
        for i, (chunk_id, doc_id, coll_id, ordinal, title, text, source, cat, lang, ts, emb) in enumerate(rows):
            chunks.append(ChunkRef(chunk_id, doc_id, coll_id, ordinal, text, title, source, cat, lang, ts))
            vector = vector_from_bytes(emb)
            if vector.shape[0] == dim:
                vectors[i] = vector
            # The title counts as part of every chunk's text, as in the ES multi_match.
            counts = Counter(lexical_terms(f"{title}\n{text}"))
            doc_len[i] = sum(counts.values())
            for term, tf in counts.items():
                term_rows[term].append((i, tf))
            for term in name_terms(f"{title}\n{text}"):
                names[term].add(i)
        postings = {
            term: (np.fromiter((r for r, _ in pairs), np.int64), np.fromiter((t for _, t in pairs), np.float32))
            for term, pairs in term_rows.items()
        }
        return cls(
            generation=generation,
            chunks=chunks,
            collection_ids=np.fromiter((c.collection_id for c in chunks), np.int64, len(chunks)),
            sources=np.array([c.source for c in chunks], dtype=object),
            categories=np.array([c.category for c in chunks], dtype=object),
            timestamps=np.array([c.timestamp.timestamp() if c.timestamp else np.nan for c in chunks], dtype=np.float64),
            vectors=vectors,
            postings=postings,
            doc_len=doc_len,
            avg_len=float(doc_len.mean()) if len(chunks) else 0.0,
            name_rows={term: np.fromiter(sorted(found), np.int64) for term, found in names.items()},
            romanized=sorted(t for t in names if t.startswith("r:")),
        )

    def mask(self, filters: SearchFilters) -> np.ndarray:
        keep = np.ones(len(self.chunks), dtype=bool)
        if filters.collection_ids is not None:
            keep &= np.isin(self.collection_ids, np.asarray(filters.collection_ids, dtype=np.int64))
        if filters.source:
            keep &= self.sources == filters.source
        if filters.category:
            keep &= self.categories == filters.category
        if filters.date_from or filters.date_to:
            with np.errstate(invalid="ignore"):
                keep &= ~np.isnan(self.timestamps)
                if filters.date_from:
                    keep &= self.timestamps >= filters.date_from.timestamp()
                if filters.date_to:
                    keep &= self.timestamps <= filters.date_to.timestamp()
        return keep

    def bm25(self, text: str) -> np.ndarray:
        scores = np.zeros(len(self.chunks), dtype=np.float32)
        n = len(self.chunks)
        for term, qtf in Counter(lexical_terms(text)).items():
            posting = self.postings.get(term)
            if posting is None:
                continue
            rows, tf = posting
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            norm = _K1 * (1 - _B + _B * self.doc_len[rows] / self.avg_len)
            scores[rows] += qtf * idf * tf * (_K1 + 1) / (tf + norm)
        return scores

    def name_scores(self, text: str) -> np.ndarray:
        """Cross-script name matches: per question word, the IDF of its best-matching name term."""
        n = len(self.chunks)
        scores = np.zeros(n, dtype=np.float32)
        for lookup in name_lookups(text):
            verdict = self.name_verdicts.get(lookup.own)
            if verdict is None:
                own = self._romanized_with(lookup.own) if lookup.own_is_prefix else [lookup.own]
                verdict = self.name_verdicts[lookup.own] = is_name(self._rows_with(own), n)
            if not verdict:
                continue  # a common word of its own script, not a name
            matched = (
                self._romanized_with(lookup.prefix)
                if lookup.prefix
                else [t for t in lookup.terms if t in self.name_rows]
            )
            self._add_best(scores, matched)
        return scores

    def _romanized_with(self, prefix: str) -> list[str]:
        """The romanized Hangul terms that begin with ``prefix`` (itself ``r:``...)."""
        return self.romanized[bisect_left(self.romanized, prefix) : bisect_left(self.romanized, prefix + "\uffff")]

    def _rows_with(self, terms: list[str]) -> int:
        rows = [self.name_rows[t] for t in terms if t in self.name_rows]
        return len(np.unique(np.concatenate(rows))) if rows else 0

    def _add_best(self, scores: np.ndarray, terms: list[str]) -> None:
        n = len(self.chunks)
        best = np.zeros(n, dtype=np.float32)
        for term in terms:
            rows = self.name_rows[term]
            best[rows] = np.maximum(best[rows], math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5)))
        scores += best


def _top(scores: np.ndarray, keep: np.ndarray, size: int) -> list[int]:
    candidates = np.flatnonzero(keep)
    if not len(candidates) or size <= 0:
        return []
    values = scores[candidates]
    if len(candidates) > size:
        part = np.argpartition(-values, size - 1)[:size]
        candidates, values = candidates[part], values[part]
    order = np.argsort(-values, kind="stable")
    return [int(i) for i in candidates[order]]


class SearchBackend(BaseSearchBackend):
    name = "local"

    def __init__(self, params) -> None:
        super().__init__(params)
        self._snapshots: dict[int, _Snapshot] = {}
        self._lock = threading.Lock()

    # --- index management ---------------------------------------------------------

    def _live(self) -> LocalIndex | None:
        return LocalIndex.objects.filter(alias=self.alias).first()

    def _new_row(self, *, alias: str) -> LocalIndex:
        from inference.services import embedding_dim, embedding_model_name

        return LocalIndex.objects.create(
            name=new_index_name(self.alias),
            alias=alias,
            analyzer=ANALYZER,
            embedding_model=embedding_model_name(),
            embedding_dim=embedding_dim(),
        )

    def ensure_index(self) -> str:
        live = self._live()
        if live is not None:
            return live.name
        try:
            with transaction.atomic():
                return self._new_row(alias=self.alias).name
        except IntegrityError:  # another process created it first
            return self._live().name

    def create_index(self) -> str:
        return self._new_row(alias="").name

    def swap_alias(self, index: str, *, delete_old: bool = True) -> list[str]:
        with transaction.atomic():
            target = LocalIndex.objects.select_for_update().get(name=index)
            old = list(LocalIndex.objects.filter(alias=self.alias).exclude(pk=target.pk))
            LocalIndex.objects.filter(pk__in=[o.pk for o in old]).update(alias="")
            target.alias = self.alias
            target.generation = F("generation") + 1
            target.save(update_fields=["alias", "generation"])
        names = [o.name for o in old]
        if delete_old:
            for name in names:
                self.delete_index(name)
        return names

    def delete_index(self, index: str) -> None:
        LocalIndex.objects.filter(name=index).delete()

    def list_indexes(self) -> list[str]:
        return list(
            LocalIndex.objects.filter(Q(alias=self.alias) | Q(name__startswith=f"{self.alias}-v"))
            .order_by("name")
            .values_list("name", flat=True)
        )

    def info(self) -> IndexInfo:
        live = self._live()
        if live is None:
            return IndexInfo(self.name, self.alias, None, None, None, None, 0, 0, self.list_indexes())
        entries = LocalIndexEntry.objects.filter(index=live)
        return IndexInfo(
            backend=self.name,
            alias=self.alias,
            concrete_index=live.name,
            analyzer=live.analyzer,
            embedding_model=live.embedding_model,
            embedding_dim=live.embedding_dim,
            chunk_count=entries.count(),
            document_count=entries.values("document_id").distinct().count(),
            other_indexes=[n for n in self.list_indexes() if n != live.name],
        )

    def _resolve(self, index: str | None) -> LocalIndex:
        name = index or self.ensure_index()
        return LocalIndex.objects.get(name=name)

    # --- writes -------------------------------------------------------------------

    def add_bulk(self, chunks: Iterable[IndexedChunk], *, index: str | None = None) -> int:
        target = self._resolve(index)
        rows = []
        for c in chunks:
            if c.embedding is None or c.embedding.shape[0] != target.embedding_dim:
                raise ValueError(f"chunk {c.chunk_id}: embedding must have {target.embedding_dim} dimensions")
            rows.append(
                LocalIndexEntry(
                    index=target,
                    chunk_id=c.chunk_id,
                    document_id=c.document_id,
                    collection_id=c.collection_id,
                    ordinal=c.ordinal,
                    title=c.title[:300],
                    text=c.text,
                    source=c.source,
                    category=c.category,
                    language=c.language,
                    timestamp=c.timestamp,
                    embedding=vector_to_bytes(c.embedding),
                )
            )
        if not rows:
            return 0
        with transaction.atomic():
            LocalIndexEntry.objects.filter(index=target, chunk_id__in=[r.chunk_id for r in rows]).delete()
            LocalIndexEntry.objects.bulk_create(rows, batch_size=500)
            LocalIndex.objects.filter(pk=target.pk).update(generation=F("generation") + 1)
        return len(rows)

    def delete(self, chunk_ids: Iterable[int], *, index: str | None = None) -> None:
        target = self._resolve(index)
        with transaction.atomic():
            LocalIndexEntry.objects.filter(index=target, chunk_id__in=list(chunk_ids)).delete()
            LocalIndex.objects.filter(pk=target.pk).update(generation=F("generation") + 1)

    def delete_document(self, document_id: int, *, index: str | None = None) -> None:
        target = self._resolve(index)
        with transaction.atomic():
            LocalIndexEntry.objects.filter(index=target, document_id=document_id).delete()
            LocalIndex.objects.filter(pk=target.pk).update(generation=F("generation") + 1)

    def document_chunk_counts(self, *, index: str | None = None) -> dict[int, int]:
        target = self._resolve(index)
        rows = LocalIndexEntry.objects.filter(index=target).values("document_id").annotate(n=Count("id"))
        return {r["document_id"]: r["n"] for r in rows}

    # --- reads --------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot | None:
        live = LocalIndex.objects.filter(alias=self.alias).values_list("pk", "generation", "embedding_dim").first()
        if live is None:
            return None
        pk, generation, dim = live
        snapshot = self._snapshots.get(pk)
        if snapshot is not None and snapshot.generation == generation:
            return snapshot
        with self._lock:
            snapshot = self._snapshots.get(pk)
            if snapshot is None or snapshot.generation != generation:
                # The generation is read before the rows (no transaction needed, which on
                # SQLite would take the write lock): a write in between makes the snapshot
                # newer than its label, so the next search reloads; never the reverse.
                generation = LocalIndex.objects.filter(pk=pk).values_list("generation", flat=True).first()
                rows = list(
                    LocalIndexEntry.objects.filter(index_id=pk)
                    .order_by("pk")
                    .values_list(
                        "chunk_id",
                        "document_id",
                        "collection_id",
                        "ordinal",
                        "title",
                        "text",
                        "source",
                        "category",
                        "language",
                        "timestamp",
                        "embedding",
                    )
                )
                snapshot = _Snapshot.build(generation or 0, rows, dim)
                # Only the live index is kept in memory.
                self._snapshots = {pk: snapshot}
        return snapshot

    def search_sync(self, query: SearchQuery) -> SearchResult:
        """``search`` on the caller's thread (the scoring alone: ``tests/bench/bench_answer_path.py``)."""
        snapshot = self._snapshot()
        if snapshot is None or not snapshot.chunks:
            return SearchResult([], [])
        keep = snapshot.mask(query.filters)
        if query.filters.collection_ids is not None and not query.filters.collection_ids:
            keep[:] = False
        lexical: list[SearchHit] = []
        names: list[SearchHit] = []
        if query.lexical:
            bm25 = snapshot.bm25(query.text)
            lexical = [SearchHit(snapshot.chunks[i], float(bm25[i])) for i in _top(bm25, keep & (bm25 > 0), query.size)]
            found = snapshot.name_scores(query.text)
            names = [
                SearchHit(snapshot.chunks[i], float(found[i])) for i in _top(found, keep & (found > 0), query.size)
            ]
        semantic: list[SearchHit] = []
        if query.vector is not None and query.vector.shape[0] == snapshot.vectors.shape[1]:
            cosine = snapshot.vectors @ query.vector.astype(np.float32)
            # Same scale as Elasticsearch's cosine similarity score: (1 + cos) / 2.
            semantic = [
                SearchHit(snapshot.chunks[i], float((1 + cosine[i]) / 2)) for i in _top(cosine, keep, query.size)
            ]
        return SearchResult(lexical, semantic, names)

    async def search(self, query: SearchQuery) -> SearchResult:
        return await sync_to_async(self.search_sync)(query)

    async def ping(self) -> str:
        info = await sync_to_async(self._live)()
        return f"local index {info.name}" if info else "local index not created yet"
