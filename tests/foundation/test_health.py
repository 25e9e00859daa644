"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.live import LiveServer, free_port


@pytest.mark.fast
def test_it_answers_liveness_without_touching_dependencies(client):
    # No django_db mark: any database access here would raise.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"


@pytest.mark.fast
@pytest.mark.django_db
def test_it_reports_readiness_as_json_naming_each_check(client):
    response = client.get("/readyz")
    body = response.json()
    assert "database" in body["checks"]
    assert body["checks"]["database"]["status"] == "ok"
    assert response.status_code == (200 if body["status"] == "ok" else 503)
    assert set(body["down"]) == {n for n, c in body["checks"].items() if c["status"] != "ok"}


@pytest.mark.fast
@pytest.mark.django_db
def test_it_exports_prometheus_metrics(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_view_transport_method_total" in text
    assert "request_duration_seconds" in text


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung dependency)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    sock.close()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_it_says_503_within_two_seconds_naming_hung_and_dead_dependencies(hanging_port):
    closed_port = free_port()  # nothing listens there
    server = LiveServer(
        env={
            "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
            "ES_URL": f"http://127.0.0.1:{hanging_port}",
            "TRITON_URL": f"http://127.0.0.1:{hanging_port}",
        }
    )
    server.start()
    try:
        started = time.perf_counter()
        response = httpx.get(f"{server.url}/readyz", timeout=10)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    assert response.status_code == 503
    body = response.json()
    assert elapsed < 2.0, f"/readyz took {elapsed:.2f}s"
    assert "redis" in body["down"]
    assert body["checks"]["database"]["status"] == "ok"
    # Elasticsearch and Triton hang rather than refuse: they must be reported down too
    # (before its registry is loaded the inference layer reports one "inference" check).
    assert "search" in body["down"], body
    assert any(name.startswith("inference") for name in body["down"]), body


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_it_is_ready_when_every_real_service_is_up(live_asgi):
    # The first call loads the endpoint registry; the second reports one check per endpoint.
    first = httpx.get(f"{live_asgi.url}/readyz", timeout=10)
    assert first.status_code == 200, first.json()
    response = httpx.get(f"{live_asgi.url}/readyz", timeout=10)
    body = response.json()
    assert response.status_code == 200, body
    names = set(body["checks"])
    assert {"database", "redis", "search"} <= names, body
    kinds = {name.split(":")[1] for name in names if name.startswith("inference:")}
    assert {"generation", "embedding", "reranker"} <= kinds, body
    assert all(check["status"] == "ok" for check in body["checks"].values()), body
