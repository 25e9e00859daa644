"""PostgreSQL faults: a read retried once on a fresh connection, fail-fast during an outage, errors in JSON (503, not 500)."""

from __future__ import annotations

import json
import sys
import time

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, transaction
from django.test import RequestFactory

from config.error_views import page_not_found, server_error
from monitoring.db.postgresql.base import DATABASE
from tests.tools import need

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def postgres_only():
    # PostgreSQL backend behaviour: skipped on the embedded SQLite, a failure in CI (which runs PostgreSQL).
    need(connection.vendor == "postgresql", "needs PostgreSQL (DATABASE_URL)")
    DATABASE.reset()
    yield
    DATABASE.reset()


def _kill_own_connection() -> None:
    """Terminate this thread's server session from another connection (what a restart does to it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host"), port=params.get("port"), user=params.get("user"),
        password=params.get("password"), dbname=params.get("dbname"), autocommit=True,
    ) as admin:  # fmt: skip
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.1)


def test_a_read_whose_connection_died_is_retried_once_on_a_fresh_one():
    get_user_model().objects.create_user("reader")
    _kill_own_connection()
    assert get_user_model().objects.filter(username="reader").count() == 1


def test_a_statement_inside_a_transaction_is_never_replayed():
    _kill_own_connection()
    with pytest.raises(OperationalError), transaction.atomic():
        get_user_model().objects.count()
    connection.close()


def test_while_the_database_is_down_connecting_fails_at_once():
    connection.close()
    DATABASE.failed(OperationalError("refused"))
    started = time.perf_counter()
    with pytest.raises(OperationalError, match="not trying again yet"):
        get_user_model().objects.count()
    assert time.perf_counter() - started < 0.2
    DATABASE.reset()
    assert get_user_model().objects.count() == 0


def _json(response) -> dict:
    return json.loads(response.content)


def _api_request(path: str):
    return RequestFactory().get(path)


def test_api_errors_are_json_even_from_djangos_own_error_views():
    missing = page_not_found(_api_request("/v1/no-such-thing"))
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
    assert _json(missing)["error"]["code"] == "not_found"
    assert _json(missing)["error"]["type"] == "invalid_request_error"  # OpenAI's field, for the SDKs
    try:
        raise ValueError("a bug")
    except ValueError:
        assert sys.exc_info()[0] is ValueError
        crashed = server_error(_api_request("/api/conversations/"))
    body = _json(crashed)["error"]
    assert crashed.status_code == 500 and body["code"] == "internal_error" and "a bug" not in crashed.content.decode()
    assert "request_id" in body


def test_a_dependency_fault_is_a_503_with_retry_after_not_a_500():
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        response = server_error(_api_request("/v1/chat/completions"))
    assert response.status_code == 503 and response["Retry-After"]
    assert _json(response)["error"]["code"] == "service_unavailable"
    page = server_error(_api_request("/"))  # a page, no exception at hand, no recent failure: the 500 page
    assert page.status_code == 500


def test_unknown_api_paths_answer_json_404(client):
    for path in ("/v1/no-such-thing", "/api/no-such-thing/"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path


def test_a_rest_view_with_its_database_gone_answers_503_json(client, monkeypatch):
    user = get_user_model().objects.create_user("writer", password="pw-writer-1")
    client.force_login(user)
    from chat import selectors

    def unreachable(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(selectors, "conversation_list", unreachable)
    response = client.get("/api/conversations/")
    assert response.status_code == 503, response.content[:300]
    assert response.json()["error"]["code"] == "service_unavailable" and response["Retry-After"]
