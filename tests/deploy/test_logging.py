"""monitoring/logging.py: JSON lines, request ids through middleware and websockets, secrets masked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from monitoring.logging import (
    REQUEST_ID_HEADER,
    JsonFormatter,
    PlainFormatter,
    RedactingFilter,
    RequestIdASGIMiddleware,
    RequestIdFilter,
    accept_request_id,
    get_request_id,
    redact,
    request_id_var,
)
from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

WITH_REQUEST_ID = ["monitoring.logging.RequestIdMiddleware", *settings.MIDDLEWARE]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefghijkl123", "abcdefghijkl123"),
        ("{'authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("api_key=sk-abcdef1234567890 next", "sk-abcdef1234567890"),
        ('{"x-api-key": "vhk_12345678"}', "vhk_12345678"),
        ("password: hunter2!", "hunter2!"),
        ("connecting to postgres://vh:s3cr3t@db:5432/vh", "s3cr3t"),
        ("key in text sk-proj-ABCDEFGH12345678 here", "ABCDEFGH12345678"),
    ],
)
def test_it_masks_secrets(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "[REDACTED]" in masked


def test_it_leaves_ordinary_text_alone() -> None:
    text = "max_tokens=16 tokens/s=20.5 user=alice 빈집 지원금"
    assert redact(text) == text


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("vh.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_formatter_writes_one_object_with_request_id_extras_and_exception() -> None:
    token = request_id_var.set("req-12345678")
    try:
        rec = record("called %s with api_key=%s", "vllm", "sk-abcdefghijklmnop", endpoint="vllm-a", status=503)
        try:
            raise RuntimeError("Authorization: Bearer sekrit-token-123")
        except RuntimeError:
            rec.exc_info = sys.exc_info()
        RequestIdFilter().filter(rec)
        line = JsonFormatter().format(rec)
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "vh.test"
    assert data["request_id"] == "req-12345678"
    assert data["endpoint"] == "vllm-a" and data["status"] == 503
    assert "sk-abcdefghijklmnop" not in line and "sekrit-token-123" not in line
    assert data["exc_type"] == "RuntimeError"
    assert data["ts"].endswith("+00:00")


def test_redacting_filter_masks_format_arguments() -> None:
    rec = record("headers=%r", {"Authorization": "Bearer abcdefghijklmnop"})
    RedactingFilter().filter(rec)
    assert "abcdefghijklmnop" not in rec.getMessage()


def test_plain_formatter_prints_the_request_id() -> None:
    rec = record("hello")
    assert "[-] hello" in PlainFormatter().format(rec)
    RequestIdFilter().filter(rec)
    assert "[-]" in PlainFormatter().format(rec)


def test_it_accepts_only_sane_incoming_ids() -> None:
    assert accept_request_id("abcdef12-3456") == "abcdef12-3456"
    for bad in ("short", "x" * 200, "has space in it", "bad\nnewline-injection", ""):
        fresh = accept_request_id(bad)
        assert fresh != bad and len(fresh) == 32


@override_settings(MIDDLEWARE=WITH_REQUEST_ID)
def test_middleware_sets_echoes_and_logs_the_request_id(client, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="monitoring.access")
    caplog.handler.addFilter(RequestIdFilter())
    response = client.get("/healthz", headers={REQUEST_ID_HEADER: "trace-abc-123"})
    assert response[REQUEST_ID_HEADER] == "trace-abc-123"
    access = [r for r in caplog.records if r.name == "monitoring.access"]
    assert access and access[-1].request_id == "trace-abc-123"
    assert access[-1].status == 200 and access[-1].path == "/healthz"

    fresh = client.get("/healthz", headers={REQUEST_ID_HEADER: "no good"})[REQUEST_ID_HEADER]
    assert fresh != "no good" and len(fresh) == 32
    assert get_request_id() is None  # reset after the request


@override_settings(MIDDLEWARE=WITH_REQUEST_ID)
async def test_middleware_works_on_the_async_path(async_client) -> None:
    response = await async_client.get("/healthz", headers={REQUEST_ID_HEADER: "async-req-0001"})
    assert response.status_code == 200
    assert response[REQUEST_ID_HEADER] == "async-req-0001"


class EchoConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        headers = dict(self.scope["headers"])
        await self.send_json({"context": get_request_id(), "header": headers[b"x-request-id"].decode()})


async def test_asgi_middleware_gives_a_websocket_its_request_id() -> None:
    app = RequestIdASGIMiddleware(EchoConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/ws/chat/", headers=[(b"x-request-id", b"ws-request-42")])
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_json_from()
    assert frame == {"context": "ws-request-42", "header": "ws-request-42"}
    await communicator.disconnect()

    communicator = WebsocketCommunicator(app, "/ws/chat/")
    await communicator.connect()
    frame = await communicator.receive_json_from()
    assert frame["context"] == frame["header"] and len(frame["header"]) == 32
    await communicator.disconnect()


def test_logging_config_wires_json_output_end_to_end() -> None:
    code = (
        "import logging, logging.config\n"
        "from monitoring.logging import logging_config, request_id_var\n"
        "logging.config.dictConfig(logging_config(fmt='json', level='INFO'))\n"
        "request_id_var.set('cfg-test-0001')\n"
        "logging.getLogger('vh').info('token Authorization: Bearer abcdefghijklmnopq')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stderr.strip().splitlines()[-1])
    assert data["request_id"] == "cfg-test-0001"
    assert "abcdefghijklmnopq" not in data["message"]
    with pytest.raises(ValueError):
        from monitoring.logging import logging_config

        logging_config(fmt="xml")
