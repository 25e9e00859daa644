"""deploy/nginx/chat.conf in a real nginx: SSE streams pass unbuffered, websockets upgrade.

The upstream is a small real HTTP server on loopback that streams two events
one second apart and answers websocket handshakes with 101, recording the
headers nginx forwarded.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import httpx
import pytest

from tests.live import REPO
from tests.nginx import Nginx

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]

EVENT_GAP_S = 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        Upstream.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            self.end_headers()
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, gap in ((1, EVENT_GAP_S), (2, 0)):
            body = f"data: {i}\n\n".encode()
            self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            self.wfile.flush()
            time.sleep(gap)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), upstream_port=upstream.server_address[1])
    try:
        nginx.start()
        yield nginx.url
    finally:
        nginx.stop()
        upstream.shutdown()


def first_event_delay(url: str) -> tuple[float, float]:
    """(seconds to the first event, seconds to the end of the stream)."""
    started = time.monotonic()
    first = None
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            if chunk and first is None:
                first = time.monotonic() - started
    return first or 0.0, time.monotonic() - started


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/conversations/7/stream"])
def test_sse_paths_stream_events_as_they_come(proxy: str, path: str) -> None:
    first, total = first_event_delay(proxy + path)
    assert total >= EVENT_GAP_S
    assert first < EVENT_GAP_S / 2, f"the first event waited {first:.2f}s: the stream is held back"


def test_streaming_locations_turn_buffering_and_gzip_off() -> None:
    """nginx may still pass small chunks early with buffering on (as above), but a slow client,
    gzip or a full buffer would hold an answer back: the streaming locations say so explicitly."""
    conf = (REPO / "deploy" / "nginx" / "chat.conf").read_text()
    for location in ("location = /v1/chat/completions {", "location ~ ^/api/.+/stream/?$ {", "location /ws/ {"):
        block = conf.split(location, 1)[1].split("}", 1)[0]
        assert "proxy_buffering off;" in block, location
        assert "proxy_read_timeout 300s;" in block, location
        if "ws" not in location:
            assert "gzip off;" in block, location


def test_forwarding_headers_reach_the_app(proxy: str) -> None:
    Upstream.seen.clear()
    httpx.get(proxy + "/api/health-ish", headers={"X-Request-ID": "req-from-client-1"}, timeout=10)
    seen = Upstream.seen[-1]
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-request-id"] == "req-from-client-1"
    httpx.get(proxy + "/api/other", timeout=10)
    assert len(Upstream.seen[-1]["x-request-id"]) == 32  # nginx's own $request_id


def test_websocket_handshake_is_upgraded_with_forwarding_headers(proxy: str) -> None:
    Upstream.seen.clear()
    host, port = proxy.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET /ws/chat/ HTTP/1.1\r\nHost: chat.example.org\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 101"), status
    seen = Upstream.seen[-1]
    assert seen["upgrade"] == "websocket"
    assert seen["connection"].lower() == "upgrade"
    assert seen["host"] == "chat.example.org"
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_metrics_are_not_served_publicly(proxy: str) -> None:
    assert httpx.get(proxy + "/metrics", timeout=10).status_code == 404
