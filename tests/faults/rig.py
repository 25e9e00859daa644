"""The fault suite's rig: the platform as production runs it, on dependencies the suite may break.

- the web server: gunicorn with 2 uvicorn workers (``tests.live.LiveServer``), DEBUG=0;
- the ingestion worker: ``manage.py knowledge_worker`` in its own process;
- Redis: a ``redis-server`` of the suite's own on a spare port (stopped and started empty);
- PostgreSQL (the test database), Elasticsearch and Triton: the shared services, each reached
  through a ``FaultProxy`` the suite cuts (the worker has a PostgreSQL proxy of its own);
- the LLM: a scripted OpenAI-compatible upstream, behind a proxy (cut = killed mid-stream).

Nothing the other test suites or engineers use is ever stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.faults.proxy import FaultProxy
from tests.live import REPO, LiveServer, free_port, test_database_url

QUESTION = "빈집 철거 지원금은 얼마인가요?"
DOCUMENT = (
    "# 빈집 철거 지원\n\n빈집 철거 지원금은 한 채에 최대 500만원입니다. 신청은 주소지 군청 건축과에서 받습니다. "
    "철거 후 빈집 터는 주차장이나 쉼터로 3년간 공공 이용합니다."
)
ANSWER_TOKENS = ["빈집", " 철거", " 지원금은", " 최대", " 500만원", "입니다", "."]


class RedisServer:
    """A redis-server of the suite's own (no persistence: a restart comes back empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="vh-faults-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", self.dir, "--logfile", str(Path(self.dir) / "redis.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis shuts down (nothing saved)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _proxy_for(url: str, name: str) -> FaultProxy:
    parts = urlsplit(url)
    return FaultProxy(parts.hostname or "127.0.0.1", parts.port or 80, name=name)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    return parts._replace(netloc=netloc).geturl()


@dataclass
class Rig:
    """Start with ``start()`` (under ``django_db_blocker.unblock()``), stop with ``close()``."""

    upstream: object  # tests.inference.scripted_upstream.ScriptedUpstream (served in a thread)
    redis: RedisServer = field(default_factory=RedisServer)
    readyz_token: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex}")
    alias: str = field(default_factory=lambda: f"vh-faults-{uuid.uuid4().hex[:8]}")
    stack: ExitStack = field(default_factory=ExitStack)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    server: LiveServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path = REPO / ".local" / "logs" / "faults-worker.log"

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        self.stack.callback(self.redis.close)
        db_url = test_database_url()
        for name, url in {
            "pg": db_url,
            "pg_worker": db_url,
            "es": os.environ["ES_URL"],
            "triton": os.environ["TRITON_URL"],
            "llm": self.upstream.base_url,  # type: ignore[attr-defined]
        }.items():
            proxy = self.proxies[name] = _proxy_for(url, name)
            self.stack.callback(proxy.close)
        env = self.env()
        self.server = LiveServer(env=env, gunicorn_workers=2)
        self.server.start(timeout=120)
        self.stack.callback(self.server.stop)
        self.start_worker()

    def env(self, *, database_proxy: str = "pg") -> dict[str, str]:
        multiproc = tempfile.mkdtemp(prefix="vh-faults-metrics-")
        self.stack.callback(shutil.rmtree, multiproc, True)
        return {
            "DATABASE_URL": _with_port(test_database_url(), self.proxies[database_proxy].port),
            "REDIS_URL": self.redis.url,
            "REDIS_CLUSTER": "0",
            "REDIS_KEY_PREFIX": "vhfaults",
            "ES_URL": f"http://127.0.0.1:{self.proxies['es'].port}",
            "ES_URLS": f"http://127.0.0.1:{self.proxies['es'].port}",
            "ES_NUMBER_OF_SHARDS": "1",
            "ES_NUMBER_OF_REPLICAS": "0",
            "ES_TIMEOUT": "2",
            "ES_MAX_RETRIES": "0",
            "SEARCH_INDEX_ALIAS": self.alias,
            "TRITON_URL": f"http://127.0.0.1:{self.proxies['triton'].port}",
            "TRITON_GRPC_URL": "",
            "TRITON_RERANKER_MODEL": "",
            "VLLM_URL": f"http://127.0.0.1:{self.proxies['llm'].port}/v1",
            "VLLM_MODEL": "scripted-model",
            "CHAT_ANSWER_MODE": "generative",
            "READYZ_TOKEN": self.readyz_token,
            "READYZ_CACHE_S": "1",
            "READYZ_TIMEOUT": "1",
            "DB_POOL_TIMEOUT": "3",
            "REDIS_TIMEOUT": "0.5",
            "RATELIMIT_REDIS_RETRY_S": "1",
            # Short config caches, so they expire (and are reloaded, or served last-known-good) during a fault.
            "CHAT_SETTINGS_TTL_S": "2",
            "GATEWAY_POLICY_CACHE_S": "2",
            "GATEWAY_KEY_CACHE_S": "2",
            "CHAT_CHECKPOINT_S": "1",
            "INFERENCE_BREAKER_COOLDOWN_S": "4",
            "INFERENCE_REGISTRY_REFRESH_S": "5",
            "KNOWLEDGE_JOBS_INLINE": "0",
            "PROMETHEUS_MULTIPROC_DIR": multiproc,
            "LOG_FORMAT": "plain",
        }

    def start_worker(self) -> None:
        env = {**os.environ, **self.env(database_proxy="pg_worker"), "PROMETHEUS_MULTIPROC_DIR": ""}
        env["SECRET_KEY"] = env.get("SECRET_KEY") or "faults-" + uuid.uuid4().hex * 2
        self.worker_log.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.worker_log, "ab")  # closed with the process (stack)
        self.worker = subprocess.Popen(
            [sys.executable, "manage.py", "knowledge_worker", "--sleep", "0.3", "--worker-id", "faults-worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.stack.callback(self._stop_worker)
        self.stack.callback(log.close)

    def _stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()

    def close(self) -> None:
        self.stack.close()
        self._drop_index()

    def _drop_index(self) -> None:
        try:
            httpx.delete(f"{os.environ['ES_URL']}/{self.alias}*", timeout=10)
        except httpx.HTTPError:
            pass

    # --- faults ------------------------------------------------------------------------

    def cut(self, *names: str) -> None:
        for name in names:
            self.proxies[name].cut()

    def restore(self, *names: str) -> None:
        for name in names:
            self.proxies[name].restore()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def ws_url(self) -> str:
        assert self.server is not None
        return self.server.ws_url

    def server_log(self) -> str:
        assert self.server is not None
        return self.server.log_path.read_text(errors="replace")
