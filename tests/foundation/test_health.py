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


@pytest.fixture(autouse=True)
def fresh_readiness():
    from monitoring.health import forget_report

    forget_report()
    yield
    forget_report()


@pytest.mark.fast
@pytest.mark.django_db
def test_it_tells_the_public_only_ok_or_not(client):
    response = client.get("/readyz")
    assert response.json() == {"status": "ok" if response.status_code == 200 else "unavailable"}
    assert "checks" not in response.content.decode()


@pytest.mark.fast
@pytest.mark.django_db
def test_it_shows_the_detail_to_a_caller_with_the_internal_token(client, settings):
    settings.READYZ_TOKEN = "readyz-secret-token"
    assert "checks" not in client.get("/readyz", HTTP_AUTHORIZATION="Bearer wrong-token").json()
    body = client.get("/readyz", HTTP_AUTHORIZATION="Bearer readyz-secret-token").json()
    assert body["checks"]["database"]["status"] == "ok"
    assert body["status"] in ("ok", "degraded", "unavailable")
    assert set(body["down"]) == {n for n, c in body["checks"].items() if c["status"] == "down"}
    partial = {n for n, c in body["checks"].items() if c["status"] == "degraded"}
    assert set(body["degraded"]) == {n for n in body["down"] if not body["checks"][n]["required"]} | partial


@pytest.mark.fast
@pytest.mark.django_db
def test_it_shows_the_detail_to_staff_only(client, django_user_model):
    user = django_user_model.objects.create_user("reader", password="pw-reader-1")
    client.force_login(user)
    assert "checks" not in client.get("/readyz").json()
    user.is_staff = True
    user.save()
    assert "database" in client.get("/readyz").json()["checks"]


@pytest.fixture
def probes(monkeypatch):
    """Replace the registered checks with scripted ones: name -> (required, outcome)."""
    from monitoring import health

    calls: list[str] = []
    scripted: dict[str, tuple[bool, bool | str]] = {}

    async def gather():
        def probe(name: str):
            async def run() -> str:
                calls.append(name)
                if scripted[name][1] == "partial":
                    raise health.Degraded(f"{name} yellow (2 nodes)")
                if not scripted[name][1]:
                    raise ConnectionRefusedError(f"{name} refused")
                return "fine"

            return run

        return [health.Check(n, probe(n), required=req) for n, (req, _ok) in scripted.items()]

    monkeypatch.setattr(health, "gather_checks", gather)
    return scripted, calls


@pytest.mark.fast
def test_an_optional_dependency_down_degrades_without_failing(client, settings, probes):
    settings.READYZ_TOKEN = "t0ken-for-tests"
    scripted, _ = probes
    scripted.update({"database": (True, True), "redis": (False, False)})
    response = client.get("/readyz", HTTP_AUTHORIZATION="Bearer t0ken-for-tests")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded" and response.json()["degraded"] == ["redis"]
    assert client.get("/readyz").json() == {"status": "ok"}


@pytest.mark.fast
def test_a_dependency_that_answers_but_is_not_whole_degrades(client, settings, probes):
    """Elasticsearch in yellow (a node of three down, every shard still served): degraded, not down."""
    settings.READYZ_TOKEN = "t0ken-for-tests"
    scripted, _ = probes
    scripted.update({"database": (True, True), "search": (False, "partial")})
    response = client.get("/readyz", HTTP_AUTHORIZATION="Bearer t0ken-for-tests")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["down"] == [] and body["degraded"] == ["search"]
    assert body["checks"]["search"]["status"] == "degraded" and "yellow" in body["checks"]["search"]["detail"]


@pytest.mark.fast
def test_a_required_dependency_down_fails_readiness(client, probes):
    scripted, _ = probes
    scripted.update({"database": (True, False), "redis": (False, True)})
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json() == {"status": "unavailable"}


@pytest.mark.fast
def test_it_checks_at_most_once_per_cache_interval(client, settings, probes):
    settings.READYZ_CACHE_S = 60
    scripted, calls = probes
    scripted.update({"database": (True, True)})
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    assert calls == ["database"]


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
def test_it_stays_ready_within_two_seconds_naming_hung_and_dead_optional_dependencies(hanging_port):
    """Redis refused, Elasticsearch and Triton hung: degraded (200), each named in the detail, fast."""
    closed_port = free_port()  # nothing listens there
    server = LiveServer(
        env={
            "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
            "ES_URL": f"http://127.0.0.1:{hanging_port}",
            "TRITON_URL": f"http://127.0.0.1:{hanging_port}",
            "READYZ_TOKEN": "readyz-test-token",
        }
    )
    server.start()
    try:
        started = time.perf_counter()
        response = httpx.get(f"{server.url}/readyz", headers={"Authorization": "Bearer readyz-test-token"}, timeout=10)
        elapsed = time.perf_counter() - started
        public = httpx.get(f"{server.url}/readyz", timeout=10)
    finally:
        server.stop()
    body = response.json()
    assert elapsed < 2.5, f"/readyz took {elapsed:.2f}s"
    assert response.status_code == 200 and body["status"] == "degraded", body
    assert "redis" in body["down"]
    assert body["checks"]["database"]["status"] == "ok"
    # Elasticsearch and Triton hang rather than refuse: reported down, without failing readiness
    # (embeddings are optional; the first check of a process probes only the required kinds).
    assert "search" in body["degraded"], body
    assert public.json() == {"status": "ok"} and "127.0.0.1" not in public.text


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_it_is_ready_when_every_real_service_is_up(settings):
    server = LiveServer(env={"READYZ_TOKEN": "readyz-test-token", "READYZ_CACHE_S": "0"})
    server.start()
    headers = {"Authorization": "Bearer readyz-test-token"}
    try:
        # The first call loads the endpoint registry; the second reports one check per kind.
        first = httpx.get(f"{server.url}/readyz", headers=headers, timeout=10)
        assert first.status_code == 200, first.json()
        response = httpx.get(f"{server.url}/readyz", headers=headers, timeout=10)
    finally:
        server.stop()
    body = response.json()
    assert response.status_code == 200, body
    assert {"database", "redis", "search", "inference:generation", "inference:embedding"} <= set(body["checks"]), body
    assert body["checks"]["inference:generation"]["required"] is True
    assert body["checks"]["inference:embedding"]["required"] is False
    assert all(check["status"] == "ok" for check in body["checks"].values()), body
