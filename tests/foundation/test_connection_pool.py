"""A synchronous view that waits on async work holds no pooled connection meanwhile.

The chat page and the REST chat views are synchronous and wait (``async_to_sync``) on work that
takes its own connection from the pool (``chat.asyncdb.db``). If the waiting thread kept its
own, enough concurrent requests would hold every slot and wait on each other until the pool's
timeout: the page answered 503 under a burst of new visitors (CI, two gunicorn workers).
Here the pool has two connections and eight clients arrive at once: every answer is 200.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from chat.gateway.services import apikey_create
from tests.gateway.conftest import dev_env
from tests.inference.scripted_upstream import running_in_thread
from tests.live import LiveServer
from tests.tools import need

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

CLIENTS = 8


@pytest.fixture
def server():
    need(connection.vendor == "postgresql", "needs PostgreSQL (DATABASE_URL): SQLite has no connection pool")
    with running_in_thread(model="pool-upstream") as upstream:
        live = LiveServer(
            env={
                **dev_env(),
                "DB_POOL_MAX_SIZE": "2",
                "DB_POOL_TIMEOUT": "3",
                "VLLM_URL": upstream.base_url,
                "VLLM_MODEL": "pool-upstream",
                "CHAT_SETTINGS_TTL_S": "0",
            }
        )
        live.start(timeout=120)
        try:
            yield live
        finally:
            live.stop()


def test_a_burst_of_new_visitors_gets_the_chat_page(server):
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(lambda _: httpx.get(f"{server.url}/", timeout=30).status_code, range(4 * CLIENTS)))
    assert statuses == [200] * (4 * CLIENTS), server.log_tail()


def test_concurrent_rest_questions_are_all_answered(server):
    user = get_user_model().objects.create_user("pool-user")
    key = apikey_create(name="pool", user=user, scopes=["chat"]).full_key
    headers = {"Authorization": f"Bearer {key}"}

    def ask(i: int) -> tuple[int, int]:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            created = client.post("/api/conversations/", json={})
            if created.status_code != 201:
                return created.status_code, 0
            path = f"/api/conversations/{created.json()['id']}/messages/"
            answer = client.post(path, json={"message": f"질문 {i}", "retrieval": False, "stream": i % 2 == 1})
            return created.status_code, answer.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(ask, range(2 * CLIENTS)))
    assert results == [(201, 200)] * (2 * CLIENTS), server.log_tail()
