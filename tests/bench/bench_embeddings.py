"""Embedding throughput against the real Triton, with and without client-side micro-batching.

Closed loop: C concurrent callers each embed one query after another (one text per
call, the chat path's shape) for DURATION seconds after a warm-up; the two modes
alternate (A/B/A/B) so load drift from other processes hits both alike. Reports
per mode and concurrency the median over rounds of: texts/s, call latency p50/p95,
and, from Triton's own metrics endpoint, inferences per model execution (the
batch size the model actually ran).

    set -a; . .local/services.env; set +a
    DEBUG=1 .venv/bin/python tests/bench/bench_embeddings.py [--duration 8] [--rounds 2] [--concurrency 1,8,64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402

from inference.config import EMBEDDING, TRITON_HTTP, EndpointConfig  # noqa: E402
from inference.embeddings import TritonEmbeddingBackend  # noqa: E402
from inference.registry import Registry  # noqa: E402

TEXTS = [f"빈집 철거 보조금 신청 방법 질문 {i}" for i in range(512)]


async def triton_counts(url: str) -> tuple[float, float]:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text

    def value(name: str) -> float:
        match = re.search(rf'^{name}{{model="embedding",version="1"}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    return value("nv_inference_count"), value("nv_inference_exec_count")


def _batches_sent(backend: TritonEmbeddingBackend) -> int:
    per_loop = backend._batchers.peek() or {}
    return per_loop[EMBEDDING].batches_sent if EMBEDDING in per_loop else 0


async def run_once(backend: TritonEmbeddingBackend, concurrency: int, duration: float, metrics_url: str) -> dict:
    latencies: list[float] = []
    stop_at = 0.0

    async def caller(offset: int) -> None:
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await backend.embed([TEXTS[i % len(TEXTS)]], query=True)
            latencies.append(time.perf_counter() - started)
            i += concurrency

    # Warm-up (connections, metadata), not measured.
    stop_at = time.perf_counter() + 1.0
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    latencies.clear()
    batches0 = _batches_sent(backend)
    count0, exec0 = await triton_counts(metrics_url)
    cpu0 = time.process_time()
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    count1, exec1 = await triton_counts(metrics_url)
    # Upstream calls the client made: one per text without batching, one per batch with it.
    calls = _batches_sent(backend) - batches0 if backend.batching else len(latencies)
    latencies.sort()
    executions = exec1 - exec0
    return {
        "texts_per_call": len(latencies) / calls if calls else 0.0,
        # This process's CPU per text: what the platform itself spends (Triton runs elsewhere).
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
        "batch": (count1 - count0) / executions if executions else 0.0,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--max-wait-ms", type=float, default=settings.INFERENCE_BATCH_MAX_WAIT_MS)
    args = parser.parse_args()
    triton_url = os.environ.get("TRITON_URL")
    metrics_url = os.environ.get("TRITON_METRICS_URL")
    if not triton_url or not metrics_url:
        sys.exit("TRITON_URL and TRITON_METRICS_URL are required (source .local/services.env)")
    config = EndpointConfig(
        name="bench-embedding",
        kind=EMBEDDING,
        protocol=TRITON_HTTP,
        base_url=triton_url,
        model_name=settings.TRITON_EMBEDDING_MODEL,
        max_concurrent=64,
        max_queue=256,
    )
    registry = Registry.static([config])
    modes = {
        "micro-batching": TritonEmbeddingBackend(registry, batching=True, max_wait_ms=args.max_wait_ms),
        "no batching": TritonEmbeddingBackend(registry, batching=False),
    }
    results: dict[tuple[str, int], list[dict]] = {}
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        for round_no in range(args.rounds):
            for mode, backend in modes.items():
                result = await run_once(backend, concurrency, args.duration, metrics_url)
                results.setdefault((mode, concurrency), []).append(result)
                print(
                    f"round {round_no + 1} c={concurrency:<3} {mode:<15} {result['rps']:7.1f} texts/s "
                    f"p50 {result['p50_ms']:6.1f} ms p95 {result['p95_ms']:6.1f} ms "
                    f"texts/call {result['texts_per_call']:5.1f} batch {result['batch']:5.1f} "
                    f"cpu {result['cpu_ms']:.2f} ms/text",
                    file=sys.stderr,
                )
    await registry.aclose()
    print(f"\nmax wait {args.max_wait_ms:g} ms, {args.duration:g} s per run, median of {args.rounds} rounds\n")
    print(
        "| callers | mode | texts/s | p50 ms | p95 ms | texts per Triton call "
        "| texts per model execution | client CPU ms/text |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for (mode, concurrency), runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {concurrency} | {mode} | {med['rps']:.1f} | {med['p50_ms']:.1f} | {med['p95_ms']:.1f} "
            f"| {med['texts_per_call']:.1f} | {med['batch']:.1f} | {med['cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
