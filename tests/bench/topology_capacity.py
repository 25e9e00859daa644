#!/usr/bin/env python
"""Per-replica figures for the capacity plan (docs/operations.md, "Capacity"), measured on the topology.

Starts tests/topology/rig.py (nginx's shipped config before two replicas, one uvicorn worker
each, on the Redis Cluster and the three-node Elasticsearch, two scripted upstreams) and
drives it through nginx, one workload after the other, for --duration seconds each:

  * ``v1-json``: POST /v1/chat/completions, an API key, unique questions (no cache hits),
    ``store: false``, retrieval off: the gateway path;
  * ``v1-json-store``: the same with ``store: true`` (a conversation written per answer);
  * ``v1-stream``: the same streamed (20 chunks);
  * ``ws``: anonymous websocket chats, each asking question after question, retrieval on
    (the index is empty, so no model call: the retrieval gate answers).

Prints requests/s, p50/p99 latency and CPU milliseconds per request of each role (the
replicas together, nginx, the Redis Cluster's six nodes, PostgreSQL, the three
Elasticsearch nodes, Triton; the upstreams' thread is in this process and not counted), read
from /proc before and after each workload.

    set -a; . .local/services.env; set +a
    DATABASE_URL=postgres://vh:vh@127.0.0.1:5432/vh_capacity .venv/bin/python tests/bench/topology_capacity.py

Its own database (created and migrated when missing): the rate-limit policies are lifted
out of reach there, so the figures are the platform's cost, not its limits.

Everything runs on this machine: CPU per request is the figure to carry to another one (a
core's capacity is 1000 / ms); requests/s here are bounded by this box's two shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", uuid.uuid4().hex * 2)

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
import websockets  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402

from chat.gateway.models import RateLimitPolicy  # noqa: E402
from chat.gateway.services import apikey_create  # noqa: E402
from chat.models import ChatSettings  # noqa: E402
from tests.topology.rig import MODEL, Topology  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError):
            pass
    return total / TICKS


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _roles(topo: Topology) -> dict[str, list[int]]:
    replicas = []
    for server in topo.servers:
        assert server.proc is not None
        replicas += [server.proc.pid, *_pids(f"gunicorn config.asgi:application .*--bind 127.0.0.1:{server.port}")]
    nginx = _pids(f"nginx.*{topo.tmp}")
    return {
        "replicas": sorted(set(replicas)),
        "nginx": nginx + [c for p in nginx for c in _children(p)],
        "redis-cluster": _pids("redis-server .*:70[0-9][0-9]"),
        "postgres": [
            int(p) for p in subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True).stdout.split()
        ],
        "elasticsearch": _pids("es-cluster|cluster/node-"),
        "triton": _pids("triton"),
    }


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def _v1(client: httpx.AsyncClient, url: str, key: str, *, store: bool, stream: bool) -> bool:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"빈집 질문 {uuid.uuid4().hex}"}],
        "max_tokens": 32,
        "retrieval": False,
        "store": store,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {key}"}
    if not stream:
        r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        return r.status_code == 200
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
        done = False
        async for line in r.aiter_lines():
            done = done or line == "data: [DONE]"
        return r.status_code == 200 and done


async def _ws_client(topo: Topology, stop_at: float, latencies: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        cookie = f"sessionid={(await http.get(f'{topo.url}/')).cookies['sessionid']}"
    async with websockets.connect(
        f"{topo.ws_url}/ws/chat/", additional_headers={"Cookie": cookie}, origin=topo.url
    ) as ws:
        cid = None
        while time.monotonic() < stop_at:
            frame: dict = {"type": "message", "content": f"빈집 철거 {uuid.uuid4().hex[:8]}"}
            if cid:
                frame["conversation_id"] = cid
            sent = time.monotonic()
            await ws.send(json.dumps(frame))
            while True:
                got = json.loads(await ws.recv())
                if got["type"] == "end":
                    cid = str(got["conversation_id"])
                    latencies.append(time.monotonic() - sent)
                    break
                if got["type"] == "error":
                    errors.append(got.get("code", "?"))
                    await asyncio.sleep(float(got.get("retry_after") or 0.5))
                    break


async def _run(topo: Topology, name: str, key: str, concurrency: int, duration: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + duration
    if name == "ws":
        await asyncio.gather(*(_ws_client(topo, stop_at, latencies, errors) for _ in range(concurrency)))
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def one_client() -> None:
                while time.monotonic() < stop_at:
                    started = time.monotonic()
                    try:
                        ok = await _v1(client, topo.url, key, store=name == "v1-json-store", stream=name == "v1-stream")
                    except httpx.HTTPError as exc:
                        errors.append(type(exc).__name__)
                        continue
                    if ok:
                        latencies.append(time.monotonic() - started)
                    else:
                        errors.append("status")

            await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return {"n": len(latencies), "errors": errors, "latencies": sorted(latencies)}


def _create_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    assert name.startswith("vh_capacity"), "use a database of its own (vh_capacity...): its policies are changed"
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workloads", default="v1-json,v1-json-store,v1-stream,ws")
    args = parser.parse_args()
    urls = os.environ.get("ES_CLUSTER_URLS", "")
    if not (os.environ.get("REDIS_CLUSTER_URL") and urls):
        sys.exit("needs REDIS_CLUSTER_URL and ES_CLUSTER_URLS (deploy/local/up redis-cluster es-cluster)")
    _create_database(os.environ["DATABASE_URL"])
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    ChatSettings.objects.update_or_create(pk=1, defaults={"retrieval_enabled": True})
    RateLimitPolicy.objects.update(requests=10**7, tokens_per_minute=0, concurrent_requests=0)
    user = get_user_model().objects.create_user(f"capacity-{uuid.uuid4().hex[:6]}")
    key = apikey_create(name="capacity", user=user, scopes=["chat"]).full_key
    topo = Topology(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ["REDIS_CLUSTER_URL"],
        es_urls=urls.split(","),
        secret_key=os.environ["SECRET_KEY"],
    )
    topo.start()
    try:
        names = ("replicas", "nginx", "redis-cluster", "postgres", "elasticsearch", "triton")
        print(f"{args.concurrency} clients, {args.duration:g} s per workload, through nginx")
        print(f"| workload | requests/s | p50 ms | p99 ms | errors | CPU ms per request: {' / '.join(names)} |")
        print("|---|---:|---:|---:|---:|---|")
        for name in args.workloads.split(","):
            asyncio.run(_run(topo, name, key, args.concurrency, 2.0))  # warm-up
            roles = _roles(topo)  # after the warm-up: the database's connection processes exist
            before = {role: _cpu_s(pids) for role, pids in roles.items()}
            started = time.monotonic()
            result = asyncio.run(_run(topo, name, key, args.concurrency, args.duration))
            elapsed = time.monotonic() - started
            cpu = {role: _cpu_s(pids) - before[role] for role, pids in roles.items()}
            n, lat = max(result["n"], 1), result["latencies"]
            p50 = statistics.median(lat) * 1000 if lat else 0
            p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0
            per = " / ".join(f"{cpu[r] * 1000 / n:.2f}" for r in names)
            print(f"| {name} | {result['n'] / elapsed:.0f} | {p50:.1f} | {p99:.1f} | {len(result['errors'])} | {per} |")
    finally:
        topo.close()


if __name__ == "__main__":
    main()
