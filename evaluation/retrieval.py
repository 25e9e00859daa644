"""Retrieval evaluation: every stage of every backend, scored on the dataset's answerable questions.

The corpora are loaded through the platform's own ingestion (upload, parse, chunk, embed,
index: ``knowledge.sample.load_manifest_dir``) once; each backend under test then gets a fresh
index built from the stored chunks and vectors (``index_rebuild``, no second embedding), under
its own alias, so the live index is never touched. Searches are scoped to the evaluation's
collections.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from evaluation import metrics
from evaluation.questions import CORPUS_DIRS, Question, questions
from inference import services as inference
from knowledge.models import Document
from knowledge.sample import load_manifest_dir
from knowledge.search import load_backend
from knowledge.search.base import BaseSearchBackend
from knowledge.services import index_rebuild, retrieve
from knowledge.services.retrieval import HYBRID, LEXICAL, SEMANTIC
from knowledge.types import RetrievedChunk, SearchFilters

# (stage name, retrieval mode, rerank)
STAGES: tuple[tuple[str, str, bool], ...] = (
    ("lexical", LEXICAL, False),
    ("dense", SEMANTIC, False),
    ("hybrid", HYBRID, False),
    ("hybrid+rerank", HYBRID, True),
)
TOP_K = 10


@dataclass(frozen=True, slots=True)
class Corpus:
    """The evaluation's documents as loaded: (collection slug, file name) -> document id."""

    doc_ids: dict[tuple[str, str], int]
    collection_ids: tuple[int, ...]

    def relevant_ids(self, question: Question) -> set[int]:
        return {self.doc_ids[ref] for ref in question.relevant}

    @property
    def filters(self) -> SearchFilters:
        return SearchFilters(collection_ids=self.collection_ids)


def load_corpora() -> Corpus:
    """Upload both corpora (idempotent) and run their ingestion here; fails if a document fails."""
    doc_ids: dict[tuple[str, str], int] = {}
    collection_ids = []
    for directory in CORPUS_DIRS:
        report = load_manifest_dir(directory, run_jobs=True)
        collection = report.collection
        collection_ids.append(collection.pk)
        for doc in Document.objects.filter(collection=collection):
            if doc.status != Document.Status.INDEXED:
                raise RuntimeError(f"evaluation corpus: {doc.original_filename} is {doc.status}: {doc.error}")
            doc_ids[(collection.slug, doc.original_filename)] = doc.pk
    missing = {ref for q in questions() for ref in q.relevant} - set(doc_ids)
    if missing:
        raise RuntimeError(f"evaluation corpus: documents not loaded: {sorted(missing)}")
    return Corpus(doc_ids, tuple(collection_ids))


@dataclass(frozen=True, slots=True)
class BackendUnderTest:
    label: str  # local, elasticsearch/nori, elasticsearch/char-bigram ...
    backend: BaseSearchBackend


def backends_under_test(names: Iterable[str], *, alias_prefix: str = "vh-eval") -> list[BackendUnderTest]:
    """``local``; ``elasticsearch`` (one per analysis: nori when the cluster has it, and char-bigram)."""
    out = []
    for name in names:
        if name == "local":
            out.append(
                BackendUnderTest("local", load_backend("knowledge.search.local", {"INDEX": f"{alias_prefix}-local"}))
            )
        elif name == "elasticsearch":
            params = {k: v for k, v in settings.SEARCH_BACKENDS["elasticsearch"].items() if k != "BACKEND"}
            params.update(SHARDS=1, REPLICAS=0, REFRESH=True)
            probe = load_backend("knowledge.search.elasticsearch", {**params, "INDEX": f"{alias_prefix}-probe"})
            analyses = ["nori", "char-bigram"] if probe.detect_analyzer() == "nori" else ["char-bigram"]
            probe.close()
            for analysis in analyses:
                es = load_backend(
                    "knowledge.search.elasticsearch",
                    {**params, "INDEX": f"{alias_prefix}-{analysis}", "ANALYZER": analysis},
                )
                out.append(BackendUnderTest(f"elasticsearch/{analysis}", es))
        else:
            raise ValueError(f"unknown backend {name!r} (local, elasticsearch)")
    return out


@dataclass
class StageResult:
    backend: str
    stage: str
    available: bool = True
    n: int = 0
    hit1: float = 0.0
    hit3: float = 0.0
    mrr: float = 0.0
    ndcg5: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    # hit@3 over the cross-lingual questions (English about Korean documents and the reverse).
    cross_lingual_hit3: float = 0.0
    misses: list[str] = field(default_factory=list)  # question ids without a relevant document in the top 3

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def ranked_documents(hits: list[RetrievedChunk]) -> list[int]:
    """Distinct document ids in the order of their best chunk."""
    seen: dict[int, None] = {}
    for hit in hits:
        seen.setdefault(hit.chunk.document_id, None)
    return list(seen)


async def evaluate_stage(
    under_test: BackendUnderTest, corpus: Corpus, stage: str, mode: str, rerank: bool, qs: Iterable[Question]
) -> StageResult:
    result = StageResult(under_test.label, stage)
    if rerank and not inference.reranker_available():
        result.available = False
        return result
    sums: dict[str, float] = defaultdict(float)
    cross = [0.0, 0]
    latencies: list[float] = []
    for q in qs:
        if not q.answerable:
            continue
        started = time.perf_counter()
        hits = await retrieve(
            q.text, filters=corpus.filters, top_k=TOP_K, rerank=rerank, mode=mode, backend=under_test.backend
        )
        latencies.append(time.perf_counter() - started)
        ranked = ranked_documents(hits)
        relevant = corpus.relevant_ids(q)
        rank = metrics.first_hit_rank(ranked, relevant)
        sums["hit1"] += metrics.hit_at(rank, 1)
        sums["hit3"] += metrics.hit_at(rank, 3)
        sums["mrr"] += metrics.reciprocal_rank(rank)
        sums["ndcg5"] += metrics.ndcg_at(ranked, relevant, 5)
        if q.cross_lingual:
            cross[0] += metrics.hit_at(rank, 3)
            cross[1] += 1
        if not metrics.hit_at(rank, 3):
            result.misses.append(q.id)
        result.n += 1
    if result.n:
        for name in ("hit1", "hit3", "mrr", "ndcg5"):
            setattr(result, name, sums[name] / result.n)
    result.cross_lingual_hit3 = cross[0] / cross[1] if cross[1] else 0.0
    result.p50_ms = metrics.percentile_ms(latencies, 50)
    result.p95_ms = metrics.percentile_ms(latencies, 95)
    return result


def evaluate_retrieval(
    backends: Iterable[str] = ("local", "elasticsearch"),
    *,
    corpus: Corpus | None = None,
    alias_prefix: str = "vh-eval",
    stages: Iterable[str] | None = None,
) -> list[StageResult]:
    """Score the stages (all by default) of every backend; the indexes built for it are deleted afterwards."""
    corpus = corpus or load_corpora()
    qs = questions()
    wanted = set(stages) if stages is not None else {name for name, _mode, _rerank in STAGES}
    unknown = wanted - {name for name, _mode, _rerank in STAGES}
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}: use {', '.join(name for name, *_ in STAGES)}")
    chosen = [stage for stage in STAGES if stage[0] in wanted]
    results = []
    for under_test in backends_under_test(backends, alias_prefix=alias_prefix):
        index_rebuild(backend=under_test.backend)
        try:
            results.extend(async_to_sync(_all_stages)(under_test, corpus, qs, chosen))
        finally:
            for name in under_test.backend.list_indexes():
                under_test.backend.delete_index(name)
            under_test.backend.close()
    return results


async def _all_stages(
    under_test: BackendUnderTest, corpus: Corpus, qs: tuple[Question, ...], stages: list[tuple[str, str, bool]]
) -> list[StageResult]:
    # One event loop for every search of a backend: pooled connections, as in the server.
    try:
        return [await evaluate_stage(under_test, corpus, *stage, qs) for stage in stages]
    finally:
        await under_test.backend.aclose()
