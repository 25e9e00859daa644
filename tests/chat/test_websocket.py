"""The websocket chat end to end: the full ASGI app, the real LLM, Elasticsearch, Triton, Redis, PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chat.history import history_key
from chat.models import Conversation, Message
from config.asgi import application
from config.redis import get_redis
from tests.chat.conftest import GUIDE_TITLE_PREFIX, nonce, session_cookie, ws_headers

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TIMEOUT = 120


async def connect(cookie: str | None = None) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=ws_headers(cookie))
    connected, _ = await ws.connect(timeout=10)
    assert connected
    return ws


async def answer(ws: WebsocketCommunicator, **frame) -> list[dict]:
    """Send a message frame; collect frames up to and including end/error."""
    await ws.send_json_to({"type": "message", **frame})
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "heartbeat":
            continue
        frames.append(frame)
        if frame["type"] in ("end", "error"):
            return frames


def rows(conversation_id) -> list[Message]:
    return list(Message.objects.filter(conversation_id=conversation_id).order_by("created_at", "id"))


async def test_it_streams_a_cited_answer_and_stores_what_was_streamed(chat_settings, guide):
    ws = await connect()
    question = f"How much is the vacant house demolition subsidy? ({nonce()})"
    frames = await answer(ws, content=question)
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "start" and kinds[1] == "sources" and kinds[-1] == "end", kinds
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) >= 2, kinds
    assert set(kinds[2:-1]) == {"token"}

    sources = frames[1]["sources"]
    assert any(s["title"].startswith(GUIDE_TITLE_PREFIX) and s["document_id"] == guide.pk for s in sources)
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert all(s["url"] and s["snippet"] for s in sources)

    end = frames[-1]
    assert end["status"] == "complete"
    assert end["usage"]["completion_tokens"] > 0 and end["usage"]["prompt_tokens"] > 0
    assert end["latency"]["ttft_ms"] is not None and end["latency"]["total_ms"] >= end["latency"]["ttft_ms"]
    assert end["html"].startswith("<")

    start = frames[0]
    stored = await database_sync_to_async(rows)(start["conversation_id"])
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[0].content == question
    assert stored[1].pk == start["message_id"] == end["message_id"]
    assert stored[1].content == "".join(tokens)
    assert [c["document_id"] for c in stored[1].citations] == [s["document_id"] for s in sources]
    assert stored[1].citations == end["citations"]
    assert stored[1].completion_tokens == end["usage"]["completion_tokens"]
    assert stored[1].ttft_ms == end["latency"]["ttft_ms"]
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=start["conversation_id"])
    assert conversation.title == question[:80] and conversation.session_key and conversation.user_id is None

    # Recent history went to Redis too, in order.
    cached = [json.loads(i) for i in await get_redis().lrange(history_key(start["conversation_id"]), 0, -1)]
    assert [(i["role"], i["content"]) for i in cached] == [("user", question), ("assistant", "".join(tokens))]

    # A follow-up in the same conversation uses it; nothing more is sent after end.
    follow = await answer(ws, content=f"And where do I apply? ({nonce()})", conversation_id=start["conversation_id"])
    assert follow[0]["conversation_id"] == start["conversation_id"] and follow[-1]["type"] == "end"
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_it_answers_ping_and_refuses_a_second_message_while_busy(chat_settings):
    chat_settings.max_tokens = 60
    await database_sync_to_async(chat_settings.save)()
    ws = await connect()
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await ws.send_json_to({"type": "message", "content": f"Tell me about vacant houses ({nonce()})"})
    await ws.send_json_to({"type": "message", "content": "second"})
    seen = []
    while True:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        seen.append(frame)
        if frame["type"] == "end":
            break
    busy = [f for f in seen if f["type"] == "error"]
    assert len(busy) == 1 and busy[0]["code"] == "busy"
    await ws.send_json_to({"type": "bogus"})
    assert (await ws.receive_json_from(timeout=5))["code"] == "invalid_request"
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from(timeout=5))["code"] == "invalid_request"
    await ws.send_json_to({"type": "message", "content": "   "})
    assert (await ws.receive_json_from(timeout=5))["code"] == "invalid_request"
    await ws.disconnect()


async def test_it_stops_on_request_and_keeps_the_partial_answer(chat_settings):
    chat_settings.max_tokens = 200
    chat_settings.retrieval_enabled = False
    await database_sync_to_async(chat_settings.save)()
    ws = await connect()
    await ws.send_json_to({"type": "message", "content": f"Write a long story about a house. ({nonce()})"})
    start = await ws.receive_json_from(timeout=TIMEOUT)
    assert start["type"] == "start"
    received = []
    while len(received) < 3:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "token":
            received.append(frame["text"])
    await ws.send_json_to({"type": "stop"})
    while True:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "token":
            received.append(frame["text"])
            continue
        break
    assert frame["type"] == "end" and frame["status"] == "partial" and frame["stopped"] is True
    stored = await database_sync_to_async(Message.objects.get)(pk=start["message_id"])
    assert stored.status == "partial"
    assert stored.content.startswith("".join(received)) and len(stored.content) < 2000
    await ws.disconnect()


async def test_it_rejects_a_foreign_origin(chat_settings):
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await ws.connect(timeout=10)
    assert not connected


async def test_user_a_cannot_read_or_continue_user_bs_conversation(chat_settings, alice, bob):
    chat_settings.retrieval_enabled = False
    await database_sync_to_async(chat_settings.save)()
    bob_cookie = await database_sync_to_async(session_cookie)(bob)
    alice_cookie = await database_sync_to_async(session_cookie)(alice)
    ws_bob = await connect(bob_cookie)
    frames = await answer(ws_bob, content=f"Bob's private question ({nonce()})")
    bobs = frames[0]["conversation_id"]
    conversation = await database_sync_to_async(Conversation.objects.get)(pk=bobs)
    assert conversation.user_id == bob.pk
    await ws_bob.disconnect()

    ws_alice = await connect(alice_cookie)
    frames = await answer(ws_alice, content="continue", conversation_id=bobs)
    assert frames == [{"type": "error", "code": "not_found", "message": "No such conversation.", "retry_after": None}]
    await ws_alice.send_json_to({"type": "regenerate", "conversation_id": bobs})
    assert (await ws_alice.receive_json_from(timeout=10))["code"] == "not_found"
    await ws_alice.disconnect()
    count = await database_sync_to_async(Message.objects.filter(conversation_id=bobs).count)()
    assert count == 2


@pytest.fixture
async def slow_upstream(chat_settings):
    """The only generation endpoint: a scripted upstream over real sockets, 200 tokens 50 ms apart."""
    from inference.config import GENERATION, OPENAI, EndpointConfig
    from inference.registry import Registry, set_registry
    from tests.inference.scripted_upstream import Answer, ScriptedUpstream

    chat_settings.retrieval_enabled = False
    await database_sync_to_async(chat_settings.save)()
    upstream = ScriptedUpstream()
    await upstream.start()
    upstream.default = Answer(tokens=[f"tok{i} " for i in range(200)], delay_s=0.05)
    config = EndpointConfig(name="scripted", kind=GENERATION, protocol=OPENAI, base_url=upstream.base_url)
    previous = set_registry(Registry.static([config]))
    try:
        yield upstream
    finally:
        set_registry(previous)
        await upstream.stop()


async def test_closing_the_socket_mid_answer_stores_the_partial_answer_and_cancels_upstream(slow_upstream):
    """A scripted slow upstream over real sockets shows the upstream request is closed."""
    upstream = slow_upstream
    ws = await connect()
    await ws.send_json_to({"type": "message", "content": f"Slow please ({nonce()})"})
    start = await ws.receive_json_from(timeout=30)
    tokens = []
    while len(tokens) < 3:
        frame = await ws.receive_json_from(timeout=30)
        if frame["type"] == "token":
            tokens.append(frame["text"])
    await ws.disconnect()
    request = upstream.chat_requests[-1]
    await asyncio.wait_for(request.disconnected_event.wait(), 10)
    assert request.client_disconnected and not request.finished and request.tokens_sent < 200

    def stored() -> Message:
        return Message.objects.get(pk=start["message_id"])

    message = await database_sync_to_async(stored)()
    assert message.status == "partial"
    assert message.content.startswith("".join(tokens)) and message.content.startswith("tok0 tok1 tok2 ")


async def test_a_streaming_answer_is_checkpointed_before_it_ends(slow_upstream, settings):
    """Every CHAT_CHECKPOINT_S the text so far is in the database, while the answer still streams."""
    from chat import checkpoints

    settings.CHAT_CHECKPOINT_S = 0.2
    book = checkpoints.book_for(asyncio.get_running_loop())
    if book is not None and book.task is not None:  # an earlier test's round, on the 10 s default
        book.task.cancel()
        book.task = None
    ws = await connect()
    await ws.send_json_to({"type": "message", "content": f"Slow please ({nonce()})"})
    start = await ws.receive_json_from(timeout=30)

    def stored() -> Message:
        return Message.objects.get(pk=start["message_id"])

    message = await database_sync_to_async(stored)()
    for _ in range(100):  # up to 5 s; the answer takes 10 s
        if message.content:
            break
        await asyncio.sleep(0.05)
        message = await database_sync_to_async(stored)()
    assert message.status == "streaming"
    assert message.content.startswith("tok0 tok1 ")
    await ws.send_json_to({"type": "stop"})
    while (await ws.receive_json_from(timeout=30))["type"] != "end":
        pass
    final = await database_sync_to_async(stored)()
    assert final.status == "partial" and final.content.startswith(message.content)
    await ws.disconnect()


async def test_a_repeated_question_is_replayed_from_the_response_cache_and_stored(chat_settings):
    chat_settings.retrieval_enabled = False
    await database_sync_to_async(chat_settings.save)()
    question = f"What is a vacant house? ({nonce()})"
    ws = await connect()
    first = await answer(ws, content=question)  # a new conversation each time: same prompt, same key
    second = await answer(ws, content=question)
    await ws.disconnect()
    assert first[-1]["status"] == "complete" and not first[0]["cached"]
    assert second[0]["cached"] is True and second[-1]["cached"] is True
    replayed = "".join(f["text"] for f in second if f["type"] == "token")
    assert replayed == "".join(f["text"] for f in first if f["type"] == "token")
    stored = await database_sync_to_async(Message.objects.get)(pk=second[0]["message_id"])
    assert stored.cached and stored.status == "complete" and stored.content == replayed
