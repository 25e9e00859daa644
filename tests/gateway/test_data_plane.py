"""``/v1/`` through the data plane (config/data_plane.py), a real uvicorn process: what Django's
handler did for these requests still happens without it.

The request id, the Host check, Django's JSON 404 for a path with no route, 413 before the
body is read to its end, the metrics' route names, and a client that leaves stopping the model
call (streamed or not): the upstream sees its connection closed.
"""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model

from chat.gateway.services import apikey_create
from tests.gateway.conftest import dev_env
from tests.inference.scripted_upstream import Answer, running_in_thread
from tests.live import LiveServer

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def plane(django_db_setup, django_db_blocker):
    with running_in_thread(model="plane-upstream") as upstream:
        server = LiveServer(
            env={
                **dev_env(),
                "VLLM_URL": upstream.base_url,
                "VLLM_MODEL": "plane-upstream",
                "REDIS_KEY_PREFIX": f"vhplane{uuid.uuid4().hex[:6]}",
                "GATEWAY_MAX_BODY_BYTES": "65536",
            }
        )
        server.start(timeout=120)
        try:
            yield server, upstream
        finally:
            server.stop()


@pytest.fixture
def key():
    user = get_user_model().objects.create_user(f"plane{uuid.uuid4().hex[:6]}")
    return apikey_create(name="plane", user=user, scopes=["chat"]).full_key


def _body(**extra) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": f"q {uuid.uuid4().hex}"}], "retrieval": False}


def test_the_edges_django_handled_are_still_handled(plane, key):
    server, _ = plane
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/v1/models", headers={**auth, "X-Request-ID": "edge-check-1"})
        assert listed.status_code == 200 and listed.headers["X-Request-ID"] == "edge-check-1"
        assert listed.headers["X-Content-Type-Options"] == "nosniff"
        for path in ("/v1/no-such-endpoint", "/v1/models/"):
            missing = client.get(path, headers=auth)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", path
        # Refused every time, also after an accepted Host (the data plane remembers only accepted ones).
        for _ in range(2):
            spoofed = client.get("/v1/models", headers={**auth, "Host": "evil.example"})
            assert spoofed.status_code == 400 and spoofed.json()["error"]["type"] == "invalid_request_error"
            assert client.get("/v1/models", headers=auth).status_code == 200
        wrong_method = client.get("/v1/chat/completions", headers=auth)
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"] == "Use POST."
        anonymous = client.get("/v1/models")
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        # 1 MiB against a 64 KiB limit: refused when the limit is passed, in OpenAI's shape.
        big = client.post(
            "/v1/chat/completions",
            content=b'{"pad": "' + b"x" * (1 << 20) + b'"}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert (
            big.json()["error"]["message"] == f"The request body is {(1 << 20) + 11} bytes; the limit is 65536 bytes."
        )
        metrics = client.get("/metrics").text
    assert re.search(r'http_requests_total\{endpoint="openai-models",status="2xx"\} [1-9]', metrics)
    assert re.search(r'http_requests_total\{endpoint="openai-chat-completions",status="4xx"\} [1-9]', metrics)
    assert "edge-check-1" in server.log_tail()  # the access line carries the request id


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_stops_the_model_call(plane, key, stream):
    server, upstream = plane
    upstream.script(Answer(tokens=["빈집"] * 200, delay_s=0.05, first_token_delay_s=0 if stream else 8))
    before = len(upstream.chat_requests)
    headers = {"Authorization": f"Bearer {key}"}
    if stream:
        with httpx.stream(
            "POST", f"{server.url}/v1/chat/completions", json=_body() | {"stream": True}, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the answer is streaming; the client leaves
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json=_body(), headers=headers, timeout=1.0)
    deadline = time.monotonic() + 10
    while len(upstream.chat_requests) == before or not upstream.chat_requests[before].client_disconnected:
        assert time.monotonic() < deadline, "the model call went on after the client left"
        time.sleep(0.05)
    assert not upstream.chat_requests[before].finished


def test_a_host_accepted_once_is_refused_after_allowed_hosts_changes(settings):
    """The data plane remembers accepted Host values only for the settings they were checked under."""
    from io import BytesIO

    from django.core.exceptions import DisallowedHost
    from django.core.handlers.asgi import ASGIRequest

    from config.data_plane import _check_host

    def request() -> ASGIRequest:
        scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [(b"host", b"api.example")]}
        return ASGIRequest(scope, BytesIO(b""))

    settings.ALLOWED_HOSTS = ["api.example"]
    _check_host(request())
    _check_host(request())  # remembered
    settings.ALLOWED_HOSTS = ["other.example"]  # setting_changed: forgotten
    with pytest.raises(DisallowedHost):
        _check_host(request())
