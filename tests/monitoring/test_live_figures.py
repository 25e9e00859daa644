"""/admin/live/: staff-only live figures page and the JSON snapshot it polls."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from inference.models import ModelEndpoint
from monitoring.dashboard import current_figures

pytestmark = [pytest.mark.fast, pytest.mark.django_db]

PAGE = "/admin/live/"
FIGURES = "/admin/live/figures.json"


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    client.force_login(user)
    return client


def test_it_routes_under_admin():
    assert reverse("monitoring-live") == PAGE
    assert reverse("monitoring-live-figures") == FIGURES


def test_it_shows_the_page_to_staff(staff_client):
    response = staff_client.get(PAGE)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-figures-url="/admin/live/figures.json"' in body
    assert "monitoring/live.js" in body
    assert body.count('class="live-chart"') == 6
    assert 'role="img"' in body
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.parametrize("url", [PAGE, FIGURES])
def test_it_refuses_anonymous(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [PAGE, FIGURES])
def test_it_refuses_non_staff(client, django_user_model, url):
    client.force_login(django_user_model.objects.create_user("citizen", password="x"))
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.urls("tests.monitoring.urls")
def test_it_counts_requests_by_status_class(staff_client):
    before = staff_client.get(FIGURES).json()
    assert staff_client.get("/healthz").status_code == 200  # probes are not counted
    assert staff_client.get("/no-such-page-for-live-figures").status_code == 404
    assert staff_client.get("/test-boom").status_code == 500
    after = staff_client.get(FIGURES).json()

    assert after["timestamp"] > before["timestamp"]
    # 404 + 500; the page's own polls (figures.json) are not counted, like the probes.
    assert after["requests"]["total"] - before["requests"]["total"] == 2
    status_before, status_after = before["requests"]["by_status"], after["requests"]["by_status"]
    assert status_after["4xx"] - status_before.get("4xx", 0) == 1
    assert status_after["5xx"] - status_before.get("5xx", 0) == 1


def test_it_returns_latency_buckets_for_p95(staff_client):
    staff_client.get("/no-such-page-for-live-figures")  # at least one observation
    latency = staff_client.get(FIGURES).json()["latency"]
    bounds = [le for le, _ in latency["buckets"]]
    counts = [count for _, count in latency["buckets"]]
    assert bounds[-1] is None  # +Inf
    assert bounds[:-1] == sorted(bounds[:-1]) and 0.005 in bounds and 60 in bounds
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == latency["count"] >= 1
    assert latency["sum"] > 0


def test_it_reports_cache_and_queue_gauges(staff_client):
    from monitoring.metrics import CACHE_REQUESTS, ENDPOINT_UP, QUEUE_DEPTH

    before = staff_client.get(FIGURES).json()
    CACHE_REQUESTS.labels("hit").inc(3)
    CACHE_REQUESTS.labels("miss").inc()
    QUEUE_DEPTH.labels("live-test-llm").set(4)
    ENDPOINT_UP.labels("live-test-llm", "generation").set(1)
    try:
        after = staff_client.get(FIGURES).json()
    finally:
        QUEUE_DEPTH.labels("live-test-llm").set(0)
    assert after["cache"]["hit"] - before["cache"]["hit"] == 3
    assert after["cache"]["miss"] - before["cache"]["miss"] == 1
    assert after["queue_depth"]["by_endpoint"]["live-test-llm"] == 4
    assert after["queue_depth"]["total"] >= 4
    assert after["endpoints_up"]["live-test-llm"] == 1


def test_it_lists_endpoint_health(staff_client):
    ModelEndpoint.objects.create(
        name="live-test-llm",
        kind=ModelEndpoint.Kind.GENERATION,
        protocol=ModelEndpoint.Protocol.OPENAI,
        base_url="http://127.0.0.1:9/v1",
        healthy=False,
        last_latency_ms=12.5,
        last_error="connection refused " * 50,
    )
    endpoints = {e["name"]: e for e in staff_client.get(FIGURES).json()["endpoints"]}
    row = endpoints["live-test-llm"]
    assert row["kind"] == "generation"
    assert row["enabled"] is True
    assert row["healthy"] is False
    assert row["last_latency_ms"] == 12.5
    assert row["last_check_at"] is None
    assert row["last_error"].startswith("connection refused") and len(row["last_error"]) <= 300


_WORKER = """
from monitoring.metrics import HTTP_REQUESTS, REQUEST_DURATION
HTTP_REQUESTS.labels("chat:index", "2xx").inc(5)
HTTP_REQUESTS.labels("chat:index", "5xx").inc(1)
REQUEST_DURATION.labels("chat:index", "GET").observe(0.2)
"""


def test_it_sums_worker_files_under_multiprocess(tmp_path, monkeypatch):
    # Two real worker processes write their own files, as gunicorn workers do.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _WORKER], env=env, cwd=root, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    figures = current_figures()

    assert figures["multiprocess"] is True
    assert figures["requests"]["total"] == 12
    assert figures["requests"]["by_status"] == {"2xx": 10, "5xx": 2}
    assert figures["latency"]["count"] == 2
    assert dict((le, n) for le, n in figures["latency"]["buckets"])[0.25] == 2


def test_it_links_the_page_from_the_admin_index(staff_client):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert f'href="{PAGE}"' in response.content.decode()
