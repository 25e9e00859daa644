"""The scaled-out platform on one machine, for the topology tests and for a person to try.

- the shipped nginx config (deploy/nginx/chat.conf) in front of two app replicas, each the
  production server (gunicorn with uvicorn workers, deploy/gunicorn.conf.py);
- the ingestion worker (``manage.py knowledge_worker``);
- the local Redis Cluster (3 masters + 3 replicas, ``REDIS_CLUSTER=1``) for everything Redis does;
- the local three-node Elasticsearch cluster (``ES_URLS``, 3 shards, 1 replica);
- PostgreSQL (the database given), Triton for embeddings;
- two OpenAI-compatible upstreams (scripted, so a test can slow, stop or count them): the
  first from VLLM_URL, the second added as an admin endpoint of the same model group
  (``add_second_upstream``).

``deploy/local/topology`` runs it in the foreground (``make``-less: it prints the URLs and
waits for Ctrl-C); the tests start it once per module.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.inference.scripted_upstream import Answer, ScriptedUpstream
from tests.live import REPO, LiveServer
from tests.nginx import Nginx

MODEL = "scripted-model"


class Upstreams:
    """Scripted OpenAI-compatible servers on one event loop in a thread; each can be stopped (a crash)."""

    def __init__(self, n: int) -> None:
        self.servers = [ScriptedUpstream(model=MODEL) for _ in range(n)]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        for server in self.servers:
            server.default = Answer(tokens=["빈집", " 정비", " 지원", "은", " 시청", "에", " 문의", "하세요", "."])
            self._run(server.start())

    def _run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def kill(self, i: int) -> None:
        """Close the listener and cut every open connection (answers in flight end mid-stream)."""
        self._run(self.servers[i].stop())

    def revive(self, i: int) -> None:
        server = self.servers[i]

        async def restart() -> None:
            server._server = await asyncio.start_server(server._handle, "127.0.0.1", server.port)

        self._run(restart())

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                self._run(server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class Topology:
    database_url: str
    redis_url: str  # a node of the Redis Cluster
    es_urls: list[str]
    secret_key: str
    replicas: int = 2
    workers_per_replica: int = 1
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vh-topology-")))
    prefix: str = field(default_factory=lambda: f"vhtopo{uuid.uuid4().hex[:6]}")
    upstreams: Upstreams = field(default_factory=lambda: Upstreams(2))
    servers: list[LiveServer] = field(default_factory=list)
    nginx: Nginx | None = None
    readyz_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": self.secret_key,
            "DEBUG": "0",
            "REDIS_URL": self.redis_url,
            "REDIS_CLUSTER": "1",
            "REDIS_KEY_PREFIX": self.prefix,
            "ES_URL": self.es_urls[0],
            "ES_URLS": ",".join(self.es_urls),
            "ES_NUMBER_OF_SHARDS": "3",
            "ES_NUMBER_OF_REPLICAS": "1",
            "SEARCH_INDEX_ALIAS": f"{self.prefix}-chunks",
            "VLLM_URL": self.upstreams.servers[0].base_url,
            "VLLM_MODEL": MODEL,
            "CHAT_ANSWER_MODE": "generative",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # nginx on loopback is the trusted proxy (its X-Forwarded-For is the client).
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "CHAT_CHECKPOINT_S": "1",
            "GATEWAY_POLICY_CACHE_S": "1",
            "CHAT_SETTINGS_TTL_S": "1",
            "RATELIMIT_SLOT_TTL_S": "6",  # a dead replica's slots lapse within the tests' patience
            "INFERENCE_REGISTRY_REFRESH_S": "2",
            "INFERENCE_BREAKER_COOLDOWN_S": "5",
            "KNOWLEDGE_JOBS_INLINE": "0",
            "PROMETHEUS_MULTIPROC_DIR": "",  # one worker per replica: its own /metrics
            "READYZ_TOKEN": self.readyz_token,  # the tests read each replica's readiness report
            "LOG_FORMAT": "plain",
        }

    # --- start / stop ------------------------------------------------------------------

    def start(self) -> None:
        self.upstreams.start()
        self.servers = [
            LiveServer(env=self.env(), gunicorn_workers=self.workers_per_replica) for _ in range(self.replicas)
        ]
        for server in self.servers:
            server.start(timeout=120)
        self.nginx = Nginx(self.tmp / "nginx", upstream_ports=[s.port for s in self.servers])
        (self.tmp / "nginx").mkdir(exist_ok=True)
        self.nginx.start()
        self._start_worker()

    def add_second_upstream(self, key: str | None = None) -> None:
        """The second upstream as an operator adds it in admin: same model group, same priority.

        With ``key`` (an API key to ask with), returns once every replica has sent it a request
        (each replica reloads its endpoint table every INFERENCE_REGISTRY_REFRESH_S).
        """
        from django.test import override_settings

        from inference.models import ModelEndpoint
        from inference.services import endpoints_sync_from_env

        with override_settings(VLLM_URL=self.upstreams.servers[0].base_url, VLLM_MODEL=MODEL):
            endpoints_sync_from_env()
        first = ModelEndpoint.objects.get(name="vllm")
        ModelEndpoint.objects.update_or_create(
            name=f"{self.prefix}-2",
            defaults={
                "kind": first.kind,
                "protocol": first.protocol,
                "base_url": self.upstreams.servers[1].base_url,
                "group": first.group,
                "model_name": first.model_name,
            },
        )
        second = self.upstreams.servers[1]
        for server in self.servers if key else []:
            before, deadline = len(second.chat_requests), time.monotonic() + 30
            while len(second.chat_requests) == before:
                assert time.monotonic() < deadline, f"replica {server.port} never used the second upstream"
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": uuid.uuid4().hex}],
                    "max_tokens": 8,
                    "retrieval": False,
                }
                httpx.post(
                    f"{server.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=15,
                )

    def _start_worker(self) -> None:
        log = open(REPO / ".local" / "logs" / "topology-worker.log", "ab")
        self.worker = subprocess.Popen(
            [sys.executable, "manage.py", "knowledge_worker", "--sleep", "0.3", "--worker-id", f"{self.prefix}-worker"],
            cwd=REPO,
            env={**os.environ, **self.env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def close(self) -> None:
        """Stop everything started; each step runs even when one before it fails."""
        with contextlib.ExitStack() as stack:
            stack.callback(self._drop_index)
            stack.callback(self.upstreams.close)
            stack.callback(self._stop_worker)
            for server in self.servers:
                stack.callback(server.stop)
            if self.nginx:
                stack.callback(self.nginx.stop)

    def _stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)

    def _drop_index(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{self.es_urls[0]}/{self.prefix}-chunks*", timeout=10)

    # --- faults ------------------------------------------------------------------------

    def kill_replica(self, i: int) -> None:
        """SIGKILL a replica's gunicorn and its workers: a crashed machine, no graceful close."""
        proc = self.servers[i].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart_replica(self, i: int) -> None:
        self.servers[i].start(timeout=120)

    def websockets_on(self, i: int) -> int:
        """Open chat websockets on replica ``i`` (its own /metrics, not through nginx)."""
        text = httpx.get(f"{self.servers[i].url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("chat_websocket_connections "):
                return int(float(line.split()[1]))
        return 0


def main() -> None:  # pragma: no cover - a person's launcher (deploy/local/topology)
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    urls = os.environ.get("ES_CLUSTER_URLS", "")
    if not (os.environ.get("REDIS_CLUSTER_URL") and urls and os.environ.get("DATABASE_URL")):
        sys.exit("needs REDIS_CLUSTER_URL, ES_CLUSTER_URLS and DATABASE_URL (deploy/local/up writes them)")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, check=True)
    topology = Topology(
        database_url=os.environ["DATABASE_URL"],
        redis_url=os.environ["REDIS_CLUSTER_URL"],
        es_urls=urls.split(","),
        secret_key=os.environ.get("SECRET_KEY") or uuid.uuid4().hex * 2,
    )
    # Ctrl-C, or SIGTERM (a supervisor; a background job starts with SIGINT ignored): stop cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.default_int_handler(signal.SIGINT, None))
    topology.start()
    topology.add_second_upstream()
    print(f"nginx {topology.url} -> replicas {[s.url for s in topology.servers]}", flush=True)
    print(f"upstreams {[u.base_url for u in topology.upstreams.servers]}; Ctrl-C stops everything", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        topology.close()


if __name__ == "__main__":
    main()
