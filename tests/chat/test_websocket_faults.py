"""The chat websocket under dependency faults: refused 'try again later', never chatting as the wrong owner; /v1 never queued behind it."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from asgiref.sync import SyncToAsync
from channels.testing import WebsocketCommunicator
from django.db import OperationalError

from chat import ws_auth
from chat.consumers import CLOSE_TRY_AGAIN_LATER
from config.asgi import application
from tests.chat.conftest import ws_headers

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_connect_that_cannot_read_its_user_is_refused_for_now(monkeypatch):
    async def unreachable(scope):
        raise OperationalError("connection refused")

    monkeypatch.setattr(ws_auth, "get_user", unreachable)
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers("somesessionkey"))
    connected, _ = await ws.connect()
    assert connected
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["code"] == "service_unavailable" and frame["retry_after"] == 5
    closed = await ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}


async def test_the_api_fast_path_does_not_wait_for_djangos_shared_sync_thread():
    """A websocket connect blocked on a hung database holds Django's one shared sync thread;
    /v1 requests have a sync thread of their own (issue #20: 31.7 s at the client, 18.5 ms in the server)."""
    release = threading.Event()
    SyncToAsync.single_thread_executor.submit(release.wait, 30)  # the shared thread, now busy
    try:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            started = time.perf_counter()
            response = await client.get("/v1/no-such-thing")
            elapsed = time.perf_counter() - started
    finally:
        release.set()
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert elapsed < 2.0, f"{elapsed:.1f}s"
