"""Coalescing of stream events that reach the client in one socket read (``coalesce=True``).

ScriptedUpstream writes every event on its own (even in two halves), so it never puts
several events in one read. The upstream here is a tiny raw HTTP/1.1 server that writes
whole batches of SSE events with ONE ``transport.write`` each and pauses between
batches: a batch arrives in one read, two batches never do (the pause lets the client
take each batch before the next is written).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from inference.clients.openai import ChatChunk, OpenAIClient
from inference.errors import InferenceError
from inference.generation import stream_chat
from inference.registry import Registry, set_registry
from inference.services import generate_stream
from inference.types import ChatMessage, StreamEnd, StreamEvent, TokenDelta
from tests.inference.conftest import generation_config

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

MESSAGES = [ChatMessage("user", "빈집 철거 보조금은 얼마인가요?")]
# Long enough for the client to read one batch before the next is written (same event loop).
PAUSE_S = 0.05
# Deliberately not len(tokens): the answer's usage must come from the upstream's usage event.
UPSTREAM_COMPLETION_TOKENS = 42

_BASE = {"id": "chatcmpl-batched", "object": "chat.completion.chunk", "created": 0, "model": "batched-model"}


def event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps({**_BASE, **payload}, ensure_ascii=False)}\n\n".encode()


def role() -> bytes:
    return event({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})


def text(token: str, finish_reason: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": token}, "finish_reason": finish_reason}]})


def finish(reason: str = "stop") -> bytes:
    return event({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


def usage(completion_tokens: int = UPSTREAM_COMPLETION_TOKENS) -> bytes:
    counts = {"prompt_tokens": 7, "completion_tokens": completion_tokens, "total_tokens": 7 + completion_tokens}
    return event({"choices": [], "usage": counts})


DONE = b"data: [DONE]\n\n"

# The main script: role; 5 tokens in one write; 1 token later; finish; usage; [DONE].
BURST = ["빈집", " 철거", " 보조금은", " 최대", " 500만"]
LATE = ["원입니다."]
MAIN_SCRIPT: list[list[bytes]] = [
    [role()],
    [text(t) for t in BURST],
    [text(t) for t in LATE],
    [finish()],
    [usage()],
    [DONE],
]
MAIN_ANSWER = "".join(BURST + LATE)


class BatchedUpstream:
    """Answers every chat completion with ``batches``: each batch in one chunk of one write.

    Each request gets its own connection (``connection: close``), so nothing else shares a
    read with the answer. ``GET .../models`` answers with one model.
    """

    def __init__(self, batches: list[list[bytes]]) -> None:
        self.batches = batches
        self.requests: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            if method == "GET" and path.endswith("/models"):
                data = json.dumps({"object": "list", "data": [{"id": "batched-model", "object": "model"}]}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                return
            self.requests.append(json.loads(body))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            for i, batch in enumerate(self.batches):
                await asyncio.sleep(PAUSE_S)
                data = b"".join(batch)
                last = i == len(self.batches) - 1
                # One write per batch; the last one carries the body's terminating chunk too.
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" + (b"0\r\n\r\n" if last else b""))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def batched() -> AsyncIterator[Callable[[list[list[bytes]]], BatchedUpstream]]:
    """Factory of started batched upstreams (stopped after the test): ``up = await batched(script)``."""
    started: list[BatchedUpstream] = []

    async def make(batches: list[list[bytes]]) -> BatchedUpstream:
        upstream = BatchedUpstream(batches)
        await upstream.start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[BatchedUpstream], OpenAIClient]]:
    made: list[OpenAIClient] = []

    def make(upstream: BatchedUpstream) -> OpenAIClient:
        client = OpenAIClient(generation_config("batched", upstream.base_url, model_name="batched-model"))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def chunks_of(client: OpenAIClient, *, coalesce: bool) -> list[ChatChunk]:
    deadline = asyncio.get_running_loop().time() + 10
    body = {"model": "batched-model", "messages": [m.as_dict() for m in MESSAGES]}
    return [chunk async for chunk in client.chat_stream(body, deadline=deadline, coalesce=coalesce)]


def shape(chunks: list[ChatChunk]) -> list[tuple[str, int, str | None, int | None]]:
    """(text, pieces, finish_reason, completion_tokens) of each chunk: one comparable list."""
    return [(c.text, c.pieces, c.finish_reason, c.usage.completion_tokens if c.usage else None) for c in chunks]


# --- the client: OpenAIClient.chat_stream ------------------------------------------------


async def test_coalesce_merges_the_text_events_of_one_read(batched, client_for):
    up = await batched(MAIN_SCRIPT)
    chunks = await chunks_of(client_for(up), coalesce=True)
    assert shape(chunks) == [
        ("", 1, None, None),  # the role-only event: nothing to merge
        ("".join(BURST), 5, None, None),  # five events, one write, one chunk
        (LATE[0], 1, None, None),  # a later write: a chunk of its own
        ("", 1, "stop", None),
        ("", 1, None, UPSTREAM_COMPLETION_TOKENS),
    ]
    assert "".join(c.text for c in chunks) == MAIN_ANSWER
    assert sum(c.pieces for c in chunks if c.text) == len(BURST) + len(LATE)
    assert all(c.model == "batched-model" for c in chunks)
    assert up.requests[0]["stream"] is True


async def test_without_coalesce_every_event_is_a_chunk(batched, client_for):
    up = await batched(MAIN_SCRIPT)
    chunks = await chunks_of(client_for(up), coalesce=False)
    assert shape(chunks) == [
        ("", 1, None, None),
        *((t, 1, None, None) for t in BURST + LATE),
        ("", 1, "stop", None),
        ("", 1, None, UPSTREAM_COMPLETION_TOKENS),
    ]
    assert "".join(c.text for c in chunks) == MAIN_ANSWER


async def test_the_default_is_no_coalescing(batched, client_for):
    up = await batched(MAIN_SCRIPT)
    deadline = asyncio.get_running_loop().time() + 10
    body = {"model": "batched-model", "messages": [m.as_dict() for m in MESSAGES]}
    chunks = [chunk async for chunk in client_for(up).chat_stream(body, deadline=deadline)]
    assert [c.pieces for c in chunks] == [1] * len(chunks)
    assert [c.text for c in chunks if c.text] == BURST + LATE


async def test_finish_usage_and_done_in_the_same_read_are_never_merged_and_keep_their_order(batched, client_for):
    # Everything after the role event in ONE write: text runs are merged, but a run ends at
    # each event that carries a finish_reason or usage, and [DONE] flushes the run before it.
    up = await batched(
        [
            [role()],
            [
                text("a"),
                text("b"),
                text("c", finish_reason="length"),  # text with a finish_reason: not merged
                text("d"),
                text("e"),
                usage(5),
                text("f"),
                text("g"),
                DONE,
            ],
        ]
    )
    chunks = await chunks_of(client_for(up), coalesce=True)
    assert shape(chunks) == [
        ("", 1, None, None),
        ("ab", 2, None, None),
        ("c", 1, "length", None),
        ("de", 2, None, None),
        ("", 1, None, 5),
        ("fg", 2, None, None),  # the run before [DONE] is not lost
    ]
    assert "".join(c.text for c in chunks) == "abcdefg"


async def test_text_merged_before_an_error_event_in_the_same_read_is_delivered_first(batched, client_for):
    # An error event ends the stream; the text that came before it in the same read must not
    # be lost with it (it is the partial answer the chat stores).
    error = b'data: {"error": {"message": "out of memory", "type": "server_error"}}\n\n'
    up = await batched([[role()], [text("a"), text("b"), text("c"), error]])
    received: list[ChatChunk] = []
    with pytest.raises(InferenceError, match="out of memory"):
        async for chunk in client_for(up).chat_stream(
            {"model": "batched-model", "messages": [m.as_dict() for m in MESSAGES]},
            deadline=asyncio.get_running_loop().time() + 10,
            coalesce=True,
        ):
            received.append(chunk)
    assert shape(received) == [("", 1, None, None), ("abc", 3, None, None)]


async def test_a_run_ends_at_an_event_without_text(batched, client_for):
    # The role event in the middle of a batch splits it; keep-alive comments do not (no event).
    up = await batched([[text("a"), role(), text("b"), b": ping\n\n", text("c")], [finish(), DONE]])
    chunks = await chunks_of(client_for(up), coalesce=True)
    assert shape(chunks) == [("a", 1, None, None), ("", 1, None, None), ("bc", 2, None, None), ("", 1, "stop", None)]


async def test_a_run_at_the_end_of_a_body_without_done_is_delivered(batched, client_for):
    # Some servers end after the finish_reason without [DONE]: the clean end keeps every chunk.
    up = await batched([[text("x")], [text("y"), text("z"), finish()]])
    chunks = await chunks_of(client_for(up), coalesce=True)
    assert shape(chunks) == [("x", 1, None, None), ("yz", 2, None, None), ("", 1, "stop", None)]


# --- through the generation layer ----------------------------------------------------------


async def events_of(stream: AsyncIterator[StreamEvent]) -> tuple[list[TokenDelta], StreamEnd]:
    deltas: list[TokenDelta] = []
    end: StreamEnd | None = None
    async with contextlib.aclosing(stream) as events:
        async for item in events:
            if isinstance(item, TokenDelta):
                assert end is None, "no TokenDelta after the StreamEnd"
                deltas.append(item)
            else:
                assert end is None, "exactly one StreamEnd"
                end = item
    assert end is not None
    return deltas, end


async def test_stream_chat_coalesces_and_counts_pieces(batched, static_registry):
    up = await batched(MAIN_SCRIPT)
    registry = static_registry(generation_config("batched", up.base_url))  # model discovered from /models
    deltas, end = await events_of(stream_chat(registry, MESSAGES, coalesce=True))
    assert [(d.text, d.pieces) for d in deltas] == [("".join(BURST), 5), (LATE[0], 1)]
    assert sum(d.pieces for d in deltas) == len(BURST) + len(LATE)
    assert "".join(d.text for d in deltas) == MAIN_ANSWER
    assert end.usage.completion_tokens == UPSTREAM_COMPLETION_TOKENS
    assert end.usage.prompt_tokens == 7
    assert (end.finish_reason, end.endpoint, end.model) == ("stop", "batched", "batched-model")


async def test_stream_chat_without_coalesce_gives_one_delta_per_event(batched, static_registry):
    up = await batched(MAIN_SCRIPT)
    registry = static_registry(generation_config("batched", up.base_url, model_name="batched-model"))
    deltas, end = await events_of(stream_chat(registry, MESSAGES))
    assert [(d.text, d.pieces) for d in deltas] == [(t, 1) for t in BURST + LATE]
    assert end.usage.completion_tokens == UPSTREAM_COMPLETION_TOKENS


async def test_without_usage_the_completion_tokens_are_the_pieces_not_the_deltas(batched, static_registry):
    # No usage event: the layer counts tokens itself, and a merged delta counts as its pieces.
    up = await batched([[role()], [text(t) for t in BURST], [text(t) for t in LATE], [finish(), DONE]])
    registry = static_registry(generation_config("batched", up.base_url, model_name="batched-model"))
    deltas, end = await events_of(stream_chat(registry, MESSAGES, coalesce=True))
    assert len(deltas) == 2
    assert end.usage.completion_tokens == len(BURST) + len(LATE)


async def test_generate_stream_passes_coalesce_through(batched):
    up = await batched(MAIN_SCRIPT)
    registry = Registry.static([generation_config("batched", up.base_url, model_name="batched-model")])
    previous = set_registry(registry)
    try:
        deltas, end = await events_of(generate_stream(MESSAGES, coalesce=True))
        assert [d.pieces for d in deltas] == [5, 1]
        assert "".join(d.text for d in deltas) == MAIN_ANSWER
        assert end.usage.completion_tokens == UPSTREAM_COMPLETION_TOKENS
        # The default stays one delta per token.
        deltas, _end = await events_of(generate_stream(MESSAGES))
        assert [d.pieces for d in deltas] == [1] * (len(BURST) + len(LATE))
    finally:
        set_registry(previous)
        await registry.aclose()
