#!/usr/bin/env python
"""How many concurrent websocket chats one machine sustains, and the delay the platform adds per token.

Starts (loopback only; everything it starts is stopped at the end):
  * ``stamped_upstream.py``: an OpenAI-compatible upstream streaming --chunks tokens,
    --delay-ms apart; every token's text is the monotonic time at which the upstream wrote it;
  * the platform exactly as production runs it: gunicorn + the platform's uvicorn worker
    (deploy/gunicorn.conf.py, --workers of them), VLLM_URL at that upstream, retrieval off
    (this measures the chat path, not Elasticsearch/Triton), rate limits and the response
    cache off (every question goes upstream and is stored), real PostgreSQL and Redis;
  * --load-procs load-generator processes (aiohttp websocket clients, uvloop).

Per level, K websocket clients connect, then each asks question after question in its own
conversation (unique text; first question at a random moment of the --ramp-s window, so the
answers do not all start and end in lockstep). Measured over --duration seconds after the ramp:

  * added per token: client receive time minus the token's upstream write time (one clock,
    CLOCK_MONOTONIC, for every process): what the platform plus two loopback hops added;
  * TTFT: question sent -> first token (the upstream itself waits --delay-ms before it);
  * answers/s, tokens/s, errors by code; CPU seconds per second of each role (platform
    workers, upstream, load generators, PostgreSQL, Redis) and of the whole box;
  * the load generators' own event-loop lag (p99): if that is high, the client, not the
    platform, was late, and the "added" figures overstate the platform's share.

    DATABASE_URL=postgres://vh:vh@127.0.0.1:5432/vh_bench REDIS_URL=redis://127.0.0.1:6390/0 \\
      .venv/bin/python tests/bench/bench_websocket.py --clients 100,1000 --chunks 200 --delay-ms 100

Bounded: at most 2000 clients, 120 s per level, 20 minutes in all; loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.live import free_port  # noqa: E402

MAX_CLIENTS, MAX_LEVEL_S, MAX_TOTAL_S = 2000, 120, 1200
GOAL_CLIENTS, GOAL_ADDED_P99_MS = 1000, 50.0


def pct(values: Any, p: float) -> float | None:
    return float(np.percentile(values, p)) if len(values) else None


def wait_http(url: str, timeout: float = 90) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


# --- CPU accounting (/proc) ------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, str, float] | None:
    """(parent pid, command name, CPU seconds) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(roots: dict[str, list[int]], names: dict[str, str]) -> dict[str, float]:
    """CPU seconds so far of each role: the process trees under ``roots``, processes by ``names``."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _proc_stat(int(entry))):
            procs[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for role, pids in roots.items():
        seen, todo = set(), list(pids)
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in procs:
                continue
            seen.add(pid)
            todo.extend(children.get(pid, ()))
        out[role] = sum(procs[p][2] for p in seen)
    for role, comm in names.items():
        out[role] = sum(cpu for _, name, cpu in procs.values() if name == comm)
    return out


def box_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --- load generator (child processes) ----------------------------------------------------


def load_process(
    url: str, clients: int, ramp_s: float, duration: float, think_s: float, seed: int, ready: Any, go: Any, out: Any
) -> None:
    import uvloop

    out.put(uvloop.run(_load(url, clients, ramp_s, duration, think_s, seed, ready, go)))


async def _load(
    url: str, clients: int, ramp_s: float, duration: float, think_s: float, seed: int, ready: Any, go: Any
) -> dict[str, Any]:
    import aiohttp
    import orjson

    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    added_us = array("q")  # per token: receive time - upstream write time
    ttft_ms = array("d")
    result: dict[str, Any] = {"answers": 0, "tokens": 0, "errors": {}, "connected": 0}
    window = [float("inf"), float("inf")]  # monotonic start, end of the measured window
    connected = asyncio.Event()

    def error(code: str) -> None:
        result["errors"][code] = result["errors"].get(code, 0) + 1

    async def idle(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
        # Wait while reading, as a browser does: the server's keepalive pings get their pongs
        # (aiohttp answers them inside receive()); a client asleep for 40 s is disconnected.
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                return
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise ConnectionError(f"socket {msg.type.name} while idle")

    async def client(session: aiohttp.ClientSession) -> None:
        try:
            # compress=15: offer permessage-deflate as browsers do; the server decides.
            async with session.ws_connect(
                url, origin="http://127.0.0.1", compress=15, autoping=True, max_msg_size=0, timeout=120
            ) as ws:
                result["connected"] += 1
                await connected.wait()
                await idle(ws, rng.uniform(0, ramp_s))
                conversation = None
                while time.monotonic() < window[1]:
                    frame: dict[str, Any] = {"type": "message", "content": f"bench question {uuid.uuid4().hex}"}
                    if conversation:
                        frame["conversation_id"] = conversation
                    sent = time.monotonic()
                    await ws.send_str(orjson.dumps(frame).decode())
                    first = True
                    while True:
                        msg = await ws.receive(timeout=120)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            error(f"socket {msg.type.name}")
                            return
                        data = orjson.loads(msg.data)
                        kind = data["type"]
                        if kind == "token":
                            now = time.monotonic()
                            if now < window[0] or now > window[1]:
                                first = False
                                continue
                            now_us = int(now * 1_000_000)
                            stamps = data["text"].split()
                            for stamp in stamps:
                                added_us.append(now_us - int(stamp, 16))
                            result["tokens"] += len(stamps)
                            if first:
                                ttft_ms.append((now - sent) * 1000)
                                first = False
                        elif kind == "start":
                            conversation = data["conversation_id"]
                        elif kind == "end":
                            if window[0] <= time.monotonic() <= window[1]:
                                result["answers"] += 1
                            break
                        elif kind == "error":
                            error(data.get("code", "?"))
                            await idle(ws, 1)  # do not hammer a refusing server
                            break
                    if think_s:
                        await idle(ws, rng.expovariate(1 / think_s))
        except Exception as exc:
            error(type(exc).__name__)

    lag_ms = array("d")

    async def ticker() -> None:
        # How late this process's own loop wakes: its share of any "added" figure.
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lag_ms.append((loop.time() - before - 0.01) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        deadline = time.monotonic() + 90
        while result["connected"] + sum(result["errors"].values()) < clients and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        ready.set()
        await loop.run_in_executor(None, go.wait)
        start = time.monotonic()
        window[0], window[1] = start + ramp_s, start + ramp_s + duration
        tick = asyncio.create_task(ticker())
        connected.set()
        await asyncio.wait(tasks, timeout=ramp_s + duration + 130)
        tick.cancel()
        for task in tasks:
            task.cancel()
    result.update(added_us=added_us, ttft_ms=ttft_ms, lag_p99_ms=pct(lag_ms, 99), window=window)
    return result


def run_level(
    url: str, clients: int, args: argparse.Namespace, cpus: str | None, sample: Any
) -> tuple[dict[str, Any], Any, Any]:
    """Run one level; ``sample()`` is called at the start and the end of the measured window."""
    ctx = mp.get_context("fork")
    procs, readies, go, out = [], [], ctx.Event(), ctx.Queue()
    share = [clients // args.load_procs + (1 if i < clients % args.load_procs else 0) for i in range(args.load_procs)]
    for i, n in enumerate(share):
        ready = ctx.Event()
        p = ctx.Process(
            target=load_process,
            args=(url, n, args.ramp_s, args.duration, args.think_s, 1000 * i + clients, ready, go, out),
            daemon=True,
        )
        p.start()
        if cpus:
            os.sched_setaffinity(p.pid, {int(c) for c in cpus.split(",")})
        procs.append(p)
        readies.append(ready)
    for ready in readies:
        ready.wait(120)
    go.set()
    time.sleep(args.ramp_s)
    first = sample()
    time.sleep(args.duration)
    last = sample()
    results = [out.get(timeout=args.ramp_s + args.duration + 200) for _ in procs]
    for p in procs:
        p.join(10)
    merged: dict[str, Any] = {"answers": 0, "tokens": 0, "connected": 0, "errors": {}}
    added, ttft = array("q"), array("d")
    for r in results:
        for k in ("answers", "tokens", "connected"):
            merged[k] += r[k]
        for code, n in r["errors"].items():
            merged["errors"][code] = merged["errors"].get(code, 0) + n
        added.extend(r["added_us"])
        ttft.extend(r["ttft_ms"])
    merged["added_ms"] = [v / 1000 for v in added]
    merged["ttft_ms"] = list(ttft)
    merged["load_lag_p99_ms"] = max((r["lag_p99_ms"] or 0) for r in results)
    return merged, first, last


# --- set-up ------------------------------------------------------------------------------


def prepare_database(env: dict[str, str]) -> None:
    """Migrate the bench database and write the answer settings the bench needs."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    code = (
        "from chat.models import ChatSettings; "
        "ChatSettings(pk=1, system_prompt='Answer briefly.', retrieval_enabled=False, "
        "context_window=4096, max_tokens=512, temperature=0.0).save(); "
        "from inference.services import endpoints_sync_from_env; endpoints_sync_from_env(); "
        # The endpoint's admission limits are its capacity (admin); the bench's upstream
        # takes any number of streams, so they are lifted to the bench's concurrency.
        "from inference.models import ModelEndpoint; "
        "ModelEndpoint.objects.filter(kind='generation').update(max_concurrent=2100, max_queue=2100)"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True)


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="100,1000", help="concurrency levels (comma-separated)")
    ap.add_argument("--duration", type=float, default=30, help="measured seconds per level (after the ramp)")
    ap.add_argument(
        "--ramp-s", type=float, default=None, help="first questions spread over this (default: one answer's length)"
    )
    ap.add_argument("--think-s", type=float, default=0, help="mean pause between an answer and the next question")
    ap.add_argument("--chunks", type=int, default=200, help="tokens per answer")
    ap.add_argument("--delay-ms", type=float, default=100, help="upstream delay between tokens")
    ap.add_argument("--workers", type=int, default=2, help="platform worker processes (production: one per core)")
    ap.add_argument("--load-procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--server-cpus", default=None, help="pin the platform to these CPUs (taskset list)")
    ap.add_argument("--load-cpus", default=None, help="pin load generators and upstream to these CPUs")
    args = ap.parse_args()
    if args.ramp_s is None:
        args.ramp_s = args.chunks * args.delay_ms / 1000
    levels = [int(c) for c in args.clients.split(",")]
    per_level = args.ramp_s + args.duration + 30
    if max(levels) > MAX_CLIENTS or args.duration > MAX_LEVEL_S or len(levels) * per_level > MAX_TOTAL_S:
        sys.exit(f"refusing: at most {MAX_CLIENTS} clients, {MAX_LEVEL_S}s per level, {MAX_TOTAL_S}s in all")
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} must be set (a real PostgreSQL and Redis)")

    up_port, app_port = free_port(), free_port()
    metrics_dir = tempfile.mkdtemp(prefix="vh-bench-metrics-")
    env = {
        **os.environ,
        "VLLM_URL": f"http://127.0.0.1:{up_port}/v1",
        "VLLM_MODEL": "fake-model",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + "x9Yz" * 16,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "RATELIMIT_ENABLED": "0",
        "RESPONSE_CACHE_ENABLED": "0",
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(args.workers),
        "GUNICORN_BIND": f"127.0.0.1:{app_port}",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }
    procs: list[subprocess.Popen] = []
    try:
        upstream = subprocess.Popen(
            [
                *taskset(args.load_cpus),
                sys.executable,
                str(Path(__file__).with_name("stamped_upstream.py")),
                "--port",
                str(up_port),
                "--chunks",
                str(args.chunks),
                "--delay-ms",
                str(args.delay_ms),
            ],
            start_new_session=True,
        )
        procs.append(upstream)
        wait_http(f"http://127.0.0.1:{up_port}/health")
        prepare_database(env)
        server = subprocess.Popen(
            [
                *taskset(args.server_cpus),
                sys.executable,
                "-m",
                "gunicorn",
                "config.asgi:application",
                "-c",
                "deploy/gunicorn.conf.py",
            ],
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        procs.append(server)
        wait_http(f"http://127.0.0.1:{app_port}/healthz")
        ws_url = f"ws://127.0.0.1:{app_port}/ws/chat/"
        print(
            f"upstream: {args.chunks} tokens/answer, {args.delay_ms:g} ms apart "
            f"({1000 / args.delay_ms:g} tokens/s per stream); platform: {args.workers} worker(s)"
            f"{' on CPUs ' + args.server_cpus if args.server_cpus else ''}; "
            f"{args.load_procs} load process(es); ramp {args.ramp_s:g}s, measured {args.duration:g}s"
        )
        cols = (
            "clients answers/s tokens/s added_p50_ms added_p90_ms added_p99_ms added_max_ms ttft_p50_ms "
            "ttft_p99_ms platform_cpu upstream_cpu load_cpu postgres_cpu redis_cpu box_busy% load_lag_p99_ms errors"
        )
        print(cols)
        rows = []
        for level in levels:
            roots = {"platform": [server.pid], "upstream": [upstream.pid], "load": [os.getpid()]}
            names = {"postgres": "postgres", "redis": "redis-server"}

            def sample(roots: dict[str, list[int]] = roots, names: dict[str, str] = names) -> Any:
                return time.monotonic(), cpu_by_role(roots, names), box_cpu()

            stats, (t0, cpu0, box0), (t1, cpu1, box1) = run_level(ws_url, level, args, args.load_cpus, sample)
            # Over the measured window only. "load" is this process's tree (the load generators)
            # less the platform's and the upstream's trees, which are its children too.
            for c in (cpu0, cpu1):
                c["load"] -= c["platform"] + c["upstream"]
            cpu = {role: round((cpu1[role] - cpu0[role]) / (t1 - t0), 2) for role in cpu1}
            busy = round((box1[0] - box0[0]) / max(1, box1[1] - box0[1]) * 100)
            r1 = lambda v: None if v is None else round(v, 1)  # noqa: E731
            row = {
                "clients": level,
                "connected": stats["connected"],
                "answers_per_s": round(stats["answers"] / args.duration, 1),
                "tokens_per_s": round(stats["tokens"] / args.duration),
                "added_p50_ms": r1(pct(stats["added_ms"], 50)),
                "added_p90_ms": r1(pct(stats["added_ms"], 90)),
                "added_p99_ms": r1(pct(stats["added_ms"], 99)),
                "added_max_ms": r1(max(stats["added_ms"], default=None)),
                "ttft_p50_ms": r1(pct(stats["ttft_ms"], 50)),
                "ttft_p99_ms": r1(pct(stats["ttft_ms"], 99)),
                "cpu": cpu,
                "box_busy_pct": busy,
                "load_lag_p99_ms": r1(stats["load_lag_p99_ms"]),
                "errors": stats["errors"],
            }
            rows.append(row)
            print(
                " ".join(
                    str(v)
                    for v in (
                        level,
                        row["answers_per_s"],
                        row["tokens_per_s"],
                        row["added_p50_ms"],
                        row["added_p90_ms"],
                        row["added_p99_ms"],
                        row["added_max_ms"],
                        row["ttft_p50_ms"],
                        row["ttft_p99_ms"],
                        cpu["platform"],
                        cpu["upstream"],
                        cpu["load"],
                        cpu["postgres"],
                        cpu["redis"],
                        busy,
                        row["load_lag_p99_ms"],
                        json.dumps(row["errors"]),
                    )
                ),
                flush=True,
            )
        goal = next((r for r in rows if r["clients"] >= GOAL_CLIENTS), None)
        if goal is not None:
            met = (
                not goal["errors"]
                and goal["connected"] == goal["clients"]
                and (goal["added_p99_ms"] or 1e9) < GOAL_ADDED_P99_MS
            )
            print(
                f"goal ({GOAL_CLIENTS} concurrent streams, added per-token p99 < {GOAL_ADDED_P99_MS:g} ms, no errors): "
                f"{'MET' if met else 'NOT MET'} at {goal['clients']} clients"
            )
        print(
            json.dumps(
                {
                    "chunks": args.chunks,
                    "delay_ms": args.delay_ms,
                    "workers": args.workers,
                    "load_procs": args.load_procs,
                    "server_cpus": args.server_cpus,
                    "load_cpus": args.load_cpus,
                    "levels": rows,
                }
            )
        )
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
