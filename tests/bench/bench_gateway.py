"""Gateway benchmark: what the limiter adds to a request, and how fast cache hits are served.

In process (the default): loops of ``admit()`` + ``settle()`` at concurrency 1/16/64, on a
single Redis and on the Redis Cluster, in three modes:

- ``baseline``: limiter off, no cache key: admit() returns without touching Redis;
- ``limiter``: the global + per-user checks (two EVALSHA in one pipeline) and settle()
  (releases the concurrency slot, charges tokens);
- ``cache-hit``: the limiter plus a response-cache GET that hits (the full admit of a
  cached answer).

Over HTTP (``--http URL --key vhk_...``): GET /api/gateway/whoami (auth + limiter + JSON)
and, with ``--chat``, cache-hit rounds of POST /v1/chat/completions (the first request
primes the cache) at concurrency 1/16/64.

Run:  set -a; . .local/services.env; set +a
      DEBUG=1 .venv/bin/python tests/bench/bench_gateway.py [--ops 3000] [--http http://127.0.0.1:8000 --key ...]
Figures go to docs/gateway.md ("Benchmark").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from django.conf import settings  # noqa: E402

from chat.gateway import limiter  # noqa: E402
from chat.gateway.services import CachedAnswer, Subject, admit, cache_put, keys_purge_prefix, settle  # noqa: E402

CONCURRENCY = (1, 16, 64)


def _percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _use_policies() -> None:
    # The bench needs no database: install a policy table directly (what limiter.policies()
    # would load), with limits high enough that nothing is refused.
    big = 10**9
    limiter._table = limiter.PolicyTable(
        defaults={
            "global": limiter.Policy(1, "bench-global", "global", big, 60),
            "user": limiter.Policy(2, "bench-user", "user", big, 60, tokens_per_minute=big, concurrent=1000),
        },
        loaded_at=time.monotonic() + 10**6,
    )


async def _run(mode: str, concurrency: int, ops: int, cache_key: str | None) -> dict[str, float]:
    latencies: list[float] = []
    per_worker = max(1, ops // concurrency)

    async def worker(i: int) -> None:
        subject = Subject(user_id=10_000 + i)
        for _ in range(per_worker):
            t0 = time.perf_counter()
            admission = await admit(subject, cache_key=cache_key)
            await settle(subject, admission, prompt_tokens=10, completion_tokens=20)
            latencies.append(time.perf_counter() - t0)
            assert admission.allowed and (cache_key is None or admission.cached is not None), admission

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "cpu_us": cpu / len(latencies) * 1e6,
        "ops": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


async def raw_round_trip(url: str, cluster: bool, ops: int) -> None:
    """The floor: one redis-py PING per op on the same client (what one round trip costs here)."""
    from config.redis import get_redis

    settings.REDIS_URL, settings.REDIS_CLUSTER = url, cluster
    client = get_redis()
    for c in CONCURRENCY:
        latencies: list[float] = []

        async def worker(n: int, latencies=latencies) -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                await client.ping()
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(max(1, ops // c)) for _ in range(c)))
        wall = time.perf_counter() - started
        print(
            f"{'cluster' if cluster else 'redis':8} {'ping':10} c={c:<3} ops={len(latencies):<6} {len(latencies) / wall:9.0f}/s "
            f"p50={_percentile(latencies, 50) * 1000:.3f} ms p99={_percentile(latencies, 99) * 1000:.3f} ms"
        )


async def in_process(topology: str, url: str, ops: int) -> None:
    await raw_round_trip(url, topology == "cluster", ops)
    settings.REDIS_URL = url
    settings.REDIS_CLUSTER = topology == "cluster"
    settings.REDIS_KEY_PREFIX = f"vhbench{uuid.uuid4().hex[:6]}"
    _use_policies()
    key = f"{settings.REDIS_KEY_PREFIX}:chat:response:{uuid.uuid4().hex}"
    await cache_put(key, CachedAnswer(content="빈집 정비 지원금은 ..." * 20, citations=[{"n": 1}]))
    try:
        for mode in ("baseline", "limiter", "cache-hit"):
            settings.RATELIMIT_ENABLED = mode != "baseline"
            for c in CONCURRENCY:
                await _run(mode, c, min(ops, 200), key if mode == "cache-hit" else None)  # warm-up
                r = await _run(mode, c, ops, key if mode == "cache-hit" else None)
                print(
                    f"{topology:8} {mode:10} c={c:<3} ops={r['ops']:<6} {r['rps']:9.0f}/s "
                    f"p50={r['p50_ms']:.3f} ms p99={r['p99_ms']:.3f} ms cpu={r['cpu_us']:.0f} us/op"
                )
    finally:
        settings.RATELIMIT_ENABLED = True
        await asyncio.to_thread(_cleanup)


def _cleanup() -> None:
    for family in ("ratelimit", "chat", "gateway"):
        keys_purge_prefix(prefix=family)


async def over_http(base: str, api_key: str, ops: int, chat: bool) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"}
    body = {
        "model": os.environ.get("VLLM_MODEL", "smollm2"),
        "messages": [{"role": "user", "content": "빈집 정비 지원금은?"}],
        "temperature": 0,
        "max_tokens": 16,
    }
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        if chat:
            first = await client.post("/v1/chat/completions", json=body)
            print("prime:", first.status_code, first.text[:120])
        # /healthz: the same server and middleware without the gateway (the HTTP floor).
        targets = [("healthz", "GET", "/healthz", None), ("whoami", "GET", "/api/gateway/whoami", None)]
        if chat:
            targets.append(("chat-cache-hit", "POST", "/v1/chat/completions", body))
        for name, method, path, payload in targets:
            for c in CONCURRENCY:
                latencies: list[float] = []
                statuses: dict[int, int] = {}

                async def worker(
                    n: int, method=method, path=path, payload=payload, latencies=latencies, statuses=statuses
                ) -> None:
                    for _ in range(n):
                        t0 = time.perf_counter()
                        r = await client.request(method, path, json=payload)
                        latencies.append(time.perf_counter() - t0)
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

                started = time.perf_counter()
                await asyncio.gather(*(worker(max(1, ops // c)) for _ in range(c)))
                wall = time.perf_counter() - started
                print(
                    f"http     {name:14} c={c:<3} {len(latencies) / wall:7.0f}/s p50={_percentile(latencies, 50) * 1000:.2f} ms "
                    f"p99={_percentile(latencies, 99) * 1000:.2f} ms statuses={statuses}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=3000, help="operations per (mode, concurrency) round")
    parser.add_argument("--http", help="base URL of a running server (adds the HTTP rounds)")
    parser.add_argument("--key", help="API key for --http (its policy must allow the load)")
    parser.add_argument(
        "--chat", action="store_true", help="with --http: also cache-hit rounds of /v1/chat/completions"
    )
    parser.add_argument("--http-ops", type=int, default=1000)
    parser.add_argument("--only-http", action="store_true", help="skip the in-process rounds")
    args = parser.parse_args()

    targets = [("redis", os.environ.get("REDIS_URL")), ("cluster", os.environ.get("REDIS_CLUSTER_URL"))]
    for topology, url in targets if not args.only_http else []:
        if url:
            asyncio.run(in_process(topology, url, args.ops))
        else:
            print(f"{topology}: no URL in the environment, skipped")
    if args.http:
        if not args.key:
            parser.error("--http needs --key")
        asyncio.run(over_http(args.http.rstrip("/"), args.key, args.http_ops, args.chat))


if __name__ == "__main__":
    main()
