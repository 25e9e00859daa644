"""A scripted OpenAI-compatible server over real loopback sockets, for fault-injection tests.

A raw asyncio HTTP/1.1 server (keep-alive, chunked responses) so a test decides,
request by request, exactly what the upstream does: answer (streamed or JSON),
fail with a status, hang before the first token, drop the connection mid-stream,
send an error event. It records every request and whether the client hung up.

    upstream = ScriptedUpstream()
    url = await upstream.start()                       # http://127.0.0.1:<port>/v1
    upstream.script(Fail(500), Answer(["Hel", "lo"]))  # 1st request: 500, 2nd: the answer
    ...
    await upstream.stop()

Requests beyond the script get ``default`` (an answer, unless changed). ``GET /v1/models``
always answers and does not consume the script.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """A normal answer: SSE when the request asks for a stream, else one JSON completion."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    delay_s: float = 0.0  # between tokens
    first_token_delay_s: float = 0.0
    usage: bool = True
    done: bool = True  # send data: [DONE]
    finish_reason: str | None = "stop"
    keepalive_comments: bool = True  # ": ping" lines between events
    split_writes: bool = True  # write each event in two pieces (a read may end mid-line)
    end_delay_s: float = 0.0  # between data: [DONE] and the end of the body
    gzip: bool = False  # Content-Encoding: gzip (although the client asks for identity), flushed per write
    drop_after: int | None = None  # close the socket after this many tokens (no terminator)
    error_after: int | None = None  # send an error event after this many tokens


@dataclass
class Fail:
    status: int = 500
    message: str = "scripted failure"


@dataclass
class Hang:
    """Read the request, then send nothing for ``seconds`` (then close)."""

    seconds: float = 30.0


@dataclass
class Close:
    """Read the request, then close the connection without a response."""


Action = Answer | Fail | Hang | Close


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any] | None
    tokens_sent: int = 0
    finished: bool = False  # the whole response was written
    client_disconnected: bool = False
    disconnected_event: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedUpstream:
    def __init__(self, *, model: str = "scripted-model") -> None:
        self.model = model
        self.default: Action = Answer()
        self.requests: list[Recorded] = []
        self._script: collections.deque[Action] = collections.deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self.port = 0
        self.connections = 0  # TCP connections accepted (keep-alive reuse shows here)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def script(self, *actions: Action) -> None:
        self._script.extend(actions)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    # --- connection handling ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, path, body = request
                if method == "GET" and path.endswith("/models"):
                    await _write_json(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
                    continue
                record = Recorded(method, path, body)
                self.requests.append(record)
                action = self._script.popleft() if self._script else self.default
                keep_open = await self._act(action, record, reader, writer, stream=bool((body or {}).get("stream")))
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _act(
        self,
        action: Action,
        record: Recorded,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        stream: bool,
    ) -> bool:
        if isinstance(action, Fail):
            await _write_json(writer, action.status, {"error": {"message": action.message, "code": action.status}})
            record.finished = True
            return True
        if isinstance(action, Close):
            return False
        if isinstance(action, Hang):
            await self._wait_or_disconnect(reader, record, action.seconds)
            return False
        if not stream:
            if action.first_token_delay_s:
                await self._wait_or_disconnect(reader, record, action.first_token_delay_s)
                if record.client_disconnected:
                    return False
            await _write_json(writer, 200, self._completion(action))
            record.tokens_sent = len(action.tokens)
            record.finished = True
            return True
        return await self._stream(action, record, reader, writer)

    async def _wait_or_disconnect(self, reader: asyncio.StreamReader, record: Recorded, seconds: float) -> None:
        """Sleep, noticing when the client hangs up (EOF on the socket)."""
        try:
            async with asyncio.timeout(seconds):
                data = await reader.read(1)
            if not data:
                record.client_disconnected = True
                record.disconnected_event.set()
        except TimeoutError:
            pass

    async def _stream(
        self, action: Answer, record: Recorded, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            + (b"content-encoding: gzip\r\n" if action.gzip else b"")
            + b"transfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        body = _Body(writer, gzip=action.gzip)
        watcher = asyncio.create_task(self._wait_or_disconnect(reader, record, 3600))
        try:
            if action.first_token_delay_s:
                await _sleep_unless(record, action.first_token_delay_s)
            base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": self.model}
            await self._event(body, {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}, action)
            for i, token in enumerate(action.tokens):
                if record.client_disconnected:
                    return False
                if action.drop_after is not None and i == action.drop_after:
                    return False  # close without the terminating chunk
                if action.error_after is not None and i == action.error_after:
                    await self._event(body, {"error": {"message": "scripted stream error", "code": 500}}, action)
                    await body.end()
                    record.finished = True
                    return True
                if i and action.delay_s:
                    await _sleep_unless(record, action.delay_s)
                    if record.client_disconnected:
                        return False
                if action.keepalive_comments:
                    await body.write(b": ping\n\n")
                choice = {"index": 0, "delta": {"content": token}, "finish_reason": None}
                await self._event(body, {**base, "choices": [choice]}, action)
                record.tokens_sent += 1
            if action.finish_reason:
                done = {"index": 0, "delta": {}, "finish_reason": action.finish_reason}
                await self._event(body, {**base, "choices": [done]}, action)
            if action.usage:
                usage = {
                    "prompt_tokens": 7,
                    "completion_tokens": len(action.tokens),
                    "total_tokens": 7 + len(action.tokens),
                }
                await self._event(body, {**base, "choices": [], "usage": usage}, action)
            if action.done:
                await body.write(b"data: [DONE]\r\n\r\n")
                if action.end_delay_s:
                    await asyncio.sleep(action.end_delay_s)
            await body.end()
            record.finished = True
            return True
        except (ConnectionError, RuntimeError):
            record.client_disconnected = True
            record.disconnected_event.set()
            return False
        finally:
            watcher.cancel()
            # Let the cancellation land before the next request is read from this connection
            # (two readers of one StreamReader raise, and a keep-alive connection would be lost).
            await asyncio.wait([watcher])

    async def _event(self, body: _Body, payload: dict, action: Answer) -> None:
        data = f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
        if action.split_writes and len(data) > 4:
            cut = len(data) // 2 + 1  # lands inside the JSON (or a multi-byte character)
            await body.write(data[:cut])
            await asyncio.sleep(0.001)
            await body.write(data[cut:])
        else:
            await body.write(data)

    def _completion(self, action: Answer) -> dict:
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(action.tokens)},
                    "finish_reason": action.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": len(action.tokens),
                "total_tokens": 7 + len(action.tokens),
            },
        }


async def _sleep_unless(record: Recorded, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await record.disconnected_event.wait()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict | None] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = None
    if length:
        raw = await reader.readexactly(length)
        body = json.loads(raw)
    return method, path, body


async def _write_json(writer: asyncio.StreamWriter, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "X")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


class _Body:
    """The chunked body of a streamed answer; gzip-compressed when asked, flushed at every write."""

    def __init__(self, writer: asyncio.StreamWriter, *, gzip: bool) -> None:
        self._writer = writer
        self._zip = zlib.compressobj(wbits=31) if gzip else None

    async def write(self, data: bytes) -> None:
        if self._zip is not None:
            data = self._zip.compress(data) + self._zip.flush(zlib.Z_SYNC_FLUSH)
        await _chunk(self._writer, data)

    async def end(self) -> None:
        """The gzip trailer, then the terminating empty chunk."""
        if self._zip is not None:
            await _chunk(self._writer, self._zip.flush())
        await _chunk(self._writer, b"")


@contextlib.contextmanager
def running_in_thread(**kwargs):
    """A ScriptedUpstream served by its own event loop in a thread (for sync tests: admin, commands)."""
    import threading

    upstream = ScriptedUpstream(**kwargs)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(upstream.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield upstream
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
