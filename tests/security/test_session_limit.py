"""New anonymous sessions per client address (CHAT_ANONYMOUS_SESSIONS_PER_IP), over a live server.

A client that drops its cookie on every request must not get a fresh session, and with it fresh
per-session budgets, each time; one that keeps its cookie is not counted again; a forged
X-Forwarded-For (no trusted proxy here) does not make it a new address.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from chat.gateway import services as gateway
from tests.live import LiveServer

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

LIMIT = 3
CONVERSATIONS = 2


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    live = LiveServer(
        env={
            "CHAT_ANONYMOUS_SESSIONS_PER_IP": str(LIMIT),
            "CHAT_CONVERSATIONS_PER_WINDOW": str(CONVERSATIONS),
            "REDIS_KEY_PREFIX": f"vhses{uuid.uuid4().hex[:6]}",  # a window of its own
            # The test client connects from loopback, trusted by default (nginx on the same host):
            # trust nothing here, so the forged X-Forwarded-For below is the lie it is. uvicorn
            # rewrites the peer from the header itself for FORWARDED_ALLOW_IPS (gunicorn.conf.py
            # sets it from TRUSTED_PROXIES; plain uvicorn reads the variable).
            "TRUSTED_PROXIES": "192.0.2.0/32",
            "FORWARDED_ALLOW_IPS": "192.0.2.0",
        }
    )
    live.start()
    yield live
    live.stop()


def test_a_cookieless_client_gets_only_its_addresses_sessions(server):
    kept = httpx.Client(base_url=server.url, timeout=30)
    first = kept.get("/")
    assert first.status_code == 200 and "sessionid" in first.cookies

    for n in range(LIMIT - 1):  # the address's other new sessions, each without a cookie
        fresh = httpx.get(f"{server.url}/", headers={"X-Forwarded-For": f"203.0.113.{n}"}, timeout=30)
        assert fresh.status_code == 200, fresh.text[:300]

    refused = httpx.get(f"{server.url}/", headers={"X-Forwarded-For": "198.51.100.7"}, timeout=30)
    assert refused.status_code == 429, refused.text[:300]
    assert int(refused.headers["Retry-After"]) > 0
    assert "sessionid" not in refused.cookies, "a refused client must not get a session anyway"

    again = kept.get("/")  # a client that keeps its cookie is not a new session
    assert again.status_code == 200


def test_new_conversations_per_caller_are_limited(server, django_user_model):
    """Empty conversations cost no model call, so admission never sees them: they have their own limit."""
    owner = django_user_model.objects.create_user(f"conv-{uuid.uuid4().hex[:6]}", password="pw")
    key = gateway.apikey_create(name="conversations", user=owner, scopes=["chat"]).full_key
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    for _ in range(CONVERSATIONS):
        assert api.post("/api/conversations/", json={"title": "t"}).status_code == 201
    refused = api.post("/api/conversations/", json={"title": "t"})
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["scope"] == "conversations"
    assert int(refused.headers["Retry-After"]) > 0
