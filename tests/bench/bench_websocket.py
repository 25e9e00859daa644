#!/usr/bin/env python
"""How many concurrent websocket chats one machine sustains, and the delay the platform adds per token.

Starts (loopback only, everything killed at the end):
  * the shared fake OpenAI-compatible upstream (/work/shared/bench/fake_upstream.py or
    FAKE_UPSTREAM): every answer is --chunks tokens, --delay-ms apart;
  * the platform: uvicorn config.asgi:application, VLLM_URL pointing at the fake upstream,
    retrieval off (measures the chat path, not Elasticsearch/Triton), rate limits and the
    response cache off (every message goes upstream), PostgreSQL + Redis real;
then, for each concurrency level, that many websocket clients each ask question after question
(unique text) for --duration seconds, timestamping every frame.

Per level it prints: answers completed, errors, time to first token, and the inter-token gap
seen by the clients; "added" = gap minus the upstream's own delay (what the platform adds).

  DATABASE_URL=postgres://vh:vh@127.0.0.1:5432/vh REDIS_URL=redis://127.0.0.1:6390/0 \\
  .venv/bin/python tests/bench/bench_websocket.py --clients 100,500,1000 --duration 20

Bounded: at most 2000 clients, 120 s per level, 15 minutes in all; loopback targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_CLIENTS, MAX_LEVEL_S, MAX_TOTAL_S = 2000, 120, 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def prepare_database(env: dict[str, str]) -> None:
    """Migrate the bench database and write the answer settings the bench needs."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    code = (
        "from chat.models import ChatSettings; "
        "ChatSettings(pk=1, system_prompt='Answer briefly.', retrieval_enabled=False, "
        "context_window=4096, max_tokens=256, temperature=0.0).save(); "
        "from inference.services import endpoints_sync_from_env; endpoints_sync_from_env(); "
        # The fake upstream takes any number of streams: lift the endpoint's admission limits.
        "from inference.models import ModelEndpoint; "
        "ModelEndpoint.objects.filter(kind='generation').update(max_concurrent=4000, max_queue=4000)"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, check=True)


class Stats:
    def __init__(self) -> None:
        self.completed = 0
        self.errors: dict[str, int] = {}
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        # Token i of an answer arrived this long after first_token + i * upstream_delay: the
        # delay the platform added on top of the upstream's pacing (queueing, batching).
        self.lags: list[float] = []
        self.tokens = 0


async def client(
    url: str, stop_at: list[float], stats: Stats, connected: asyncio.Event, ready: list[int], delay: float
) -> None:
    import websockets

    try:
        async with websockets.connect(
            url, origin="http://127.0.0.1", open_timeout=60, ping_interval=None, max_queue=None
        ) as ws:
            ready[0] += 1
            await connected.wait()  # all clients connect first, then ask together
            conversation = None
            while time.monotonic() < stop_at[0]:
                frame = {"type": "message", "content": f"bench question {uuid.uuid4().hex}"}
                if conversation:
                    frame["conversation_id"] = conversation
                sent = time.monotonic()
                await ws.send(json.dumps(frame))
                last = first = None
                index = 0
                while True:
                    data = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    kind = data["type"]
                    if kind == "token":
                        now = time.monotonic()
                        if last is None:
                            stats.ttft.append(now - sent)
                            first = now
                        else:
                            stats.gaps.append(now - last)
                            stats.lags.append(max(0.0, now - (first + index * delay)))
                        last = now
                        index += 1
                        stats.tokens += 1
                    elif kind == "start":
                        conversation = data["conversation_id"]
                    elif kind == "end":
                        stats.completed += 1
                        break
                    elif kind == "error":
                        stats.errors[data.get("code", "?")] = stats.errors.get(data.get("code", "?"), 0) + 1
                        break
    except Exception as exc:
        stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1


async def run_level(ws_url: str, clients: int, duration: float, delay: float) -> Stats:
    stats = Stats()
    connected = asyncio.Event()
    ready = [0]
    stop_at = [float("inf")]  # set once every client is connected
    tasks = [asyncio.create_task(client(ws_url, stop_at, stats, connected, ready, delay)) for _ in range(clients)]
    deadline = time.monotonic() + 60
    while ready[0] + sum(stats.errors.values()) < clients and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    started = time.monotonic()
    stop_at[0] = started + duration
    connected.set()
    # Answers in flight at the stop time finish (their frames count); no new ones start.
    await asyncio.wait(tasks, timeout=duration + 60)
    stats.window_s = time.monotonic() - started
    for t in tasks:
        t.cancel()
    stats.connected = ready[0]
    return stats


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="100,500,1000", help="concurrency levels (comma-separated)")
    ap.add_argument("--duration", type=float, default=20, help="seconds of asking per level")
    ap.add_argument("--chunks", type=int, default=40, help="tokens per answer (fake upstream)")
    ap.add_argument("--delay-ms", type=float, default=50, help="upstream delay between tokens")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes for the platform")
    ap.add_argument("--upstream", default=os.environ.get("FAKE_UPSTREAM", "/work/shared/bench/fake_upstream.py"))
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if max(levels) > MAX_CLIENTS or args.duration > MAX_LEVEL_S or len(levels) * (args.duration + 60) > MAX_TOTAL_S:
        sys.exit(f"refusing: at most {MAX_CLIENTS} clients, {MAX_LEVEL_S}s per level, {MAX_TOTAL_S}s in all")
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} must be set (a real PostgreSQL and Redis)")

    up_port, app_port = free_port(), free_port()
    env = {
        **os.environ,
        "VLLM_URL": f"http://127.0.0.1:{up_port}/v1",
        "VLLM_MODEL": "fake-model",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + "x9Yz" * 16,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "RATELIMIT_ENABLED": "0",
        "RESPONSE_CACHE_ENABLED": "0",
        "CHAT_CHECKPOINT_S": "0",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX_SIZE": "20",
        "CHAT_DB_THREADS": "16",
    }
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    args.upstream,
                    "--port",
                    str(up_port),
                    "--chunks",
                    str(args.chunks),
                    "--delay-ms",
                    str(args.delay_ms),
                ],
                start_new_session=True,
            )
        )
        wait_http(f"http://127.0.0.1:{up_port}/health")
        prepare_database(env)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(app_port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--ws",
                "websockets",
                "--backlog",
                "4096",
            ],
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        procs.append(server)
        wait_http(f"http://127.0.0.1:{app_port}/healthz")
        ws_url = f"ws://127.0.0.1:{app_port}/ws/chat/"
        delay = args.delay_ms / 1000
        print(f"upstream: {args.chunks} tokens/answer, {args.delay_ms:g} ms apart; platform: {args.workers} worker(s)")
        header = "clients connected answers answers/s tokens/s ttft_p50_ms ttft_p99_ms gap_p50_ms gap_p99_ms added_p50_ms added_p99_ms server_cpu% errors"
        print("(added = how late token i arrives versus first token + i x upstream delay)")
        print(header)
        rows = []
        for level in levels:
            cpu0 = cpu_seconds(server.pid)
            stats = asyncio.run(run_level(ws_url, level, args.duration, delay))
            cpu = (cpu_seconds(server.pid) - cpu0) / (stats.window_s + 1e-9) * 100
            ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
            gap50, gap99 = pct(stats.gaps, 50), pct(stats.gaps, 99)
            row = {
                "clients": level,
                "connected": stats.connected,
                "answers": stats.completed,
                "answers_per_s": round(stats.completed / stats.window_s, 1),
                "tokens_per_s": round(stats.tokens / stats.window_s),
                "ttft_p50_ms": ms(pct(stats.ttft, 50)),
                "ttft_p99_ms": ms(pct(stats.ttft, 99)),
                "gap_p50_ms": ms(gap50),
                "gap_p99_ms": ms(gap99),
                "added_p50_ms": ms(pct(stats.lags, 50)),
                "added_p99_ms": ms(pct(stats.lags, 99)),
                "server_cpu_pct": round(cpu),
                "errors": stats.errors,
            }
            rows.append(row)
            print(" ".join(str(v) for v in row.values()), flush=True)
        print(json.dumps({"chunks": args.chunks, "delay_ms": args.delay_ms, "workers": args.workers, "levels": rows}))
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
