"""Retries, failover, breaker, timeouts, interruptions and queue limits, over real sockets.

Every upstream here is a ScriptedUpstream (a real HTTP server on a loopback
port) and the client is the platform's own generation client: only the
upstream's behaviour is scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from inference.errors import (
    NoHealthyEndpoint,
    QueueFull,
    StreamInterrupted,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from inference.generation import complete_chat, stream_chat
from inference.types import ChatMessage, GenerationParams, StreamEnd, TokenDelta
from tests.inference.conftest import generation_config
from tests.inference.scripted_upstream import Answer, Close, Fail, Hang

pytestmark = [pytest.mark.fast, pytest.mark.timeout(60)]

MESSAGES = [ChatMessage("user", "빈집 철거 보조금은 얼마인가요?")]


async def collect(registry, **kwargs) -> tuple[str, StreamEnd]:
    parts, end = [], None
    async for event in stream_chat(registry, MESSAGES, **kwargs):
        if isinstance(event, TokenDelta):
            parts.append(event.text)
        else:
            assert end is None, "exactly one StreamEnd"
            end = event
    assert end is not None
    return "".join(parts), end


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_it_streams_tokens_usage_and_one_end(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer(["빈집", " 정비", " 사업"])
    text, end = await collect(static_registry(generation_config("a", up.base_url)))
    assert text == "빈집 정비 사업"
    assert end.finish_reason == "stop" and end.endpoint == "a" and end.model == "scripted-model"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (7, 3)
    assert end.ttft_s is not None and end.duration_s >= end.ttft_s
    body = up.chat_requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "scripted-model"  # blank model name: discovered from /v1/models


async def test_endpoint_defaults_apply_unless_the_caller_sets_them(upstreams, static_registry):
    up = await upstreams()
    registry = static_registry(
        generation_config("a", up.base_url, model_name="m", default_params={"temperature": 0.1, "top_k": 5})
    )
    await collect(registry, params=GenerationParams(max_tokens=9, temperature=0.7))
    body = up.chat_requests[0].body
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_k"]) == ("m", 9, 0.7, 5)


async def test_it_records_metrics_per_endpoint(upstreams, static_registry):
    from prometheus_client import REGISTRY

    def value(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    up = await upstreams()
    up.default = Answer(["a", "b", "c"], delay_s=0.01)
    registry = static_registry(generation_config("metrics-probe", up.base_url))
    before = value("inference_requests_total", endpoint="metrics-probe", kind="generation", outcome="ok")
    await collect(registry)
    labels = {"endpoint": "metrics-probe"}
    assert value("inference_requests_total", endpoint="metrics-probe", kind="generation", outcome="ok") == before + 1
    assert value("inference_time_to_first_token_seconds_count", **labels) >= 1
    assert value("inference_time_per_output_token_seconds_count", **labels) >= 2  # two gaps for three tokens
    assert value("inference_generated_tokens_total", **labels) >= 3
    assert value("inference_prompt_tokens_total", **labels) >= 7
    assert value("inference_tokens_per_second_count", **labels) >= 1
    assert value("inference_queue_wait_seconds_count", **labels) >= 1
    assert value("inference_breaker_state", **labels) == 0
    up.default = Fail(400)
    with pytest.raises(UpstreamClientError):
        await collect(registry)
    failures = value(
        "inference_requests_total", endpoint="metrics-probe", kind="generation", outcome="upstream_bad_request"
    )
    assert failures == 1


async def test_it_retries_then_succeeds(upstreams, static_registry, fast_breaker):
    fast_breaker.INFERENCE_BREAKER_FAILURES = 5  # two failures in a row must not open it here
    up = await upstreams()
    up.script(Fail(500), Close(), Answer(["ok"]))
    text, _end = await collect(static_registry(generation_config("a", up.base_url)))
    assert text == "ok"
    assert len(up.chat_requests) == 3


async def test_a_non_streaming_request_retries_too(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.script(Fail(503), Answer(["fine"]))
    completion = await complete_chat(static_registry(generation_config("a", up.base_url)), MESSAGES)
    assert completion.text == "fine" and completion.usage.completion_tokens == 1
    assert [r.body["stream"] for r in up.chat_requests] == [False, False]


async def test_a_client_error_is_not_retried(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.script(Fail(400, "context too long"))
    with pytest.raises(UpstreamClientError, match="context too long") as info:
        await collect(static_registry(generation_config("a", up.base_url)))
    assert info.value.upstream_status == 400 and len(up.chat_requests) == 1


async def test_it_fails_over_when_an_endpoint_returns_500(upstreams, static_registry, fast_breaker):
    bad, good = await upstreams(), await upstreams()
    bad.default = Fail(500)
    registry = static_registry(
        generation_config("bad", bad.base_url, priority=0), generation_config("good", good.base_url, priority=1)
    )
    text, end = await collect(registry)
    assert end.endpoint == "good" and text == "Hello, world"
    assert len(bad.chat_requests) == 1


async def test_it_fails_over_when_an_endpoint_refuses_connections(upstreams, static_registry, fast_breaker):
    good = await upstreams()
    registry = static_registry(
        generation_config("down", closed_port_url(), priority=0), generation_config("good", good.base_url, priority=1)
    )
    _text, end = await collect(registry)
    assert end.endpoint == "good"


async def test_refused_connections_everywhere_raise_a_connection_error(static_registry, fast_breaker):
    registry = static_registry(generation_config("down", closed_port_url()))
    with pytest.raises(UpstreamConnectionError):
        await collect(registry)


async def test_the_breaker_opens_and_recovers_through_a_half_open_probe(upstreams, static_registry, fast_breaker):
    flaky, backup = await upstreams(), await upstreams()
    flaky.default = Fail(500)
    registry = static_registry(
        generation_config("flaky", flaky.base_url, priority=0),
        generation_config("backup", backup.base_url, priority=1),
    )
    # Two requests, each failing once on flaky then served by backup: 2 consecutive failures.
    for _ in range(2):
        assert (await collect(registry))[1].endpoint == "backup"
    (flaky_rt,) = [rt for rt in registry.snapshot() if rt.name == "flaky"]
    assert flaky_rt.breaker.state == "open"
    # While open, flaky is skipped entirely.
    seen = len(flaky.chat_requests)
    assert (await collect(registry))[1].endpoint == "backup"
    assert len(flaky.chat_requests) == seen
    # After the cool-down one probe goes to flaky; it has recovered, so the breaker closes.
    flaky.default = Answer(["back"])
    await asyncio.sleep(0.35)
    assert flaky_rt.breaker.state == "half_open"
    text, end = await collect(registry)
    assert (end.endpoint, text) == ("flaky", "back")
    assert flaky_rt.breaker.state == "closed"


async def test_a_failed_half_open_probe_opens_the_breaker_again(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.default = Fail(500)
    registry = static_registry(generation_config("only", up.base_url))
    with pytest.raises(UpstreamServerError):
        await collect(registry, max_attempts=2)
    (rt,) = registry.snapshot()
    assert rt.breaker.state == "open"
    started = time.perf_counter()
    with pytest.raises(NoHealthyEndpoint):
        await collect(registry)  # refused at once, no request sent
    assert time.perf_counter() - started < 0.1
    await asyncio.sleep(0.35)
    with pytest.raises(UpstreamServerError):
        await collect(registry, max_attempts=1)  # the probe fails
    assert rt.breaker.state == "open"


async def test_a_hang_before_the_first_token_times_out_within_the_bound(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.default = Hang(30)
    registry = static_registry(generation_config("slow", up.base_url, read_timeout_s=0.5, total_timeout_s=5))
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await collect(registry, max_attempts=1)
    assert 0.45 < time.perf_counter() - started < 1.0
    await asyncio.wait_for(up.chat_requests[0].disconnected_event.wait(), 2)  # the socket was closed


async def test_retried_timeouts_stay_within_the_total_timeout(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.default = Answer(first_token_delay_s=30)  # headers at once, then no token
    registry = static_registry(generation_config("slow", up.base_url, read_timeout_s=0.4, total_timeout_s=1.0))
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await collect(registry, max_attempts=5)
    assert time.perf_counter() - started < 1.3
    assert 2 <= len(up.chat_requests) <= 3


async def test_a_disconnect_mid_stream_keeps_the_partial_text(upstreams, static_registry, fast_breaker):
    up = await upstreams()
    up.default = Answer(["빈집", "은 ", "지원", "대상"], drop_after=2)
    received = []
    with pytest.raises(StreamInterrupted) as info:
        async for event in stream_chat(static_registry(generation_config("a", up.base_url)), MESSAGES):
            received.append(event)
    assert info.value.partial_text == "빈집은 " == "".join(e.text for e in received)
    assert info.value.endpoint == "a"
    assert len(up.chat_requests) == 1  # no retry once tokens were delivered


async def test_an_error_event_mid_stream_is_an_interruption(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer(["a", "b", "c"], error_after=1)
    with pytest.raises(StreamInterrupted, match="scripted stream error") as info:
        await collect(static_registry(generation_config("a", up.base_url)))
    assert info.value.partial_text == "a"


async def test_a_stall_after_the_first_token_is_an_interruption(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer(["a", "b"], delay_s=30)
    registry = static_registry(generation_config("a", up.base_url, read_timeout_s=0.3))
    with pytest.raises(StreamInterrupted) as info:
        await collect(registry)
    assert info.value.partial_text == "a"
    assert isinstance(info.value.__cause__, UpstreamTimeout)


async def test_a_steady_stream_longer_than_the_read_timeout_completes(upstreams, static_registry):
    # The read timeout bounds each gap between reads, not the whole answer.
    up = await upstreams()
    up.default = Answer(["t"] * 12, delay_s=0.1)
    text, end = await collect(static_registry(generation_config("a", up.base_url, read_timeout_s=0.3)))
    assert text == "t" * 12 and end.finish_reason == "stop"


async def test_a_gap_times_out_one_read_timeout_after_the_last_token(upstreams, static_registry):
    # The bound after a token is one read timeout from that token's read, not from the
    # first read's.
    up = await upstreams()
    up.default = Answer(["a", "b"], delay_s=5)
    registry = static_registry(generation_config("a", up.base_url, read_timeout_s=0.4))
    first_token_at = None
    with pytest.raises(StreamInterrupted) as info:
        async for event in stream_chat(registry, MESSAGES):
            if isinstance(event, TokenDelta):
                first_token_at = time.perf_counter()
    assert first_token_at is not None and isinstance(info.value.__cause__, UpstreamTimeout)
    assert 0.35 < time.perf_counter() - first_token_at < 1.5


async def test_time_the_consumer_takes_between_reads_is_not_the_upstreams(upstreams, static_registry):
    # The bound starts when a read starts, so a slow consumer (a browser on a slow link)
    # does not turn into an upstream timeout.
    up = await upstreams()
    up.default = Answer(["a", "b", "c"])
    registry = static_registry(generation_config("a", up.base_url, read_timeout_s=0.2))
    parts = []
    async for event in stream_chat(registry, MESSAGES):
        if isinstance(event, TokenDelta):
            parts.append(event.text)
            await asyncio.sleep(0.4)
    assert "".join(parts) == "abc"


async def test_a_stream_without_done_but_with_finish_reason_is_complete(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer(["x"], done=False, usage=False, keepalive_comments=False)
    text, end = await collect(static_registry(generation_config("a", up.base_url)))
    assert text == "x" and end.finish_reason == "stop"
    assert end.usage.completion_tokens == 1  # counted locally when the server sends no usage


async def test_a_gzip_compressed_stream_is_decoded(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer(["빈집", " 정비"], gzip=True)
    text, end = await collect(static_registry(generation_config("a", up.base_url)))
    assert text == "빈집 정비" and end.finish_reason == "stop" and end.usage.completion_tokens == 2


async def test_finished_requests_hand_their_connection_back_for_reuse(upstreams, static_registry):
    """A stream ended by [DONE] (its tail drained) or by the body's end, an error answer and a
    JSON answer all leave the keep-alive connection reusable: one TCP connection serves them all."""
    up = await upstreams()
    up.script(Answer(["a"], end_delay_s=0.05), Answer(["b"], done=False), Fail(400), Answer(["c"]))
    registry = static_registry(generation_config("a", up.base_url))
    assert (await collect(registry))[0] == "a"
    assert (await collect(registry))[0] == "b"
    with pytest.raises(UpstreamClientError):
        await collect(registry)
    assert (await complete_chat(registry, MESSAGES)).text == "c"
    assert len(up.chat_requests) == 4
    assert up.connections == 1


async def test_closing_the_stream_closes_the_upstream_connection(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer([f"t{i} " for i in range(200)], delay_s=0.02)
    stream = stream_chat(static_registry(generation_config("a", up.base_url)), MESSAGES)
    async with contextlib.aclosing(stream):
        async for event in stream:
            if isinstance(event, TokenDelta) and event.text == "t2 ":
                break
    record = up.chat_requests[0]
    await asyncio.wait_for(record.disconnected_event.wait(), 2)
    assert record.tokens_sent < 20 and not record.finished


async def test_cancelling_the_consumer_closes_the_upstream_connection(upstreams, static_registry):
    up = await upstreams()
    up.default = Answer([f"t{i} " for i in range(200)], delay_s=0.02)
    registry = static_registry(generation_config("a", up.base_url))
    got_tokens = asyncio.Event()

    async def consume() -> None:
        async for event in stream_chat(registry, MESSAGES):
            if isinstance(event, TokenDelta):
                got_tokens.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_tokens.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = up.chat_requests[0]
    await asyncio.wait_for(record.disconnected_event.wait(), 2)
    assert not record.finished
    (rt,) = registry.snapshot()
    assert rt.limiter.active == 0  # the slot was given back


async def test_a_full_queue_is_refused_quickly(upstreams, static_registry):
    up = await upstreams()
    up.default = Hang(30)
    registry = static_registry(
        generation_config("busy", up.base_url, max_concurrent=1, max_queue=1, read_timeout_s=20, total_timeout_s=30)
    )
    running = asyncio.create_task(collect(registry))  # takes the one slot
    queued = asyncio.create_task(collect(registry))  # waits in the queue
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(up.chat_requests) == 1 and registry.snapshot()[0].limiter.waiting == 1:
            break
    started = time.perf_counter()
    with pytest.raises(QueueFull):
        await collect(registry)
    assert time.perf_counter() - started < 0.1
    for task in (running, queued):
        task.cancel()
    await asyncio.gather(running, queued, return_exceptions=True)
    assert registry.snapshot()[0].limiter.outstanding == 0


async def test_a_full_endpoint_sends_traffic_to_another(upstreams, static_registry):
    busy, free = await upstreams(), await upstreams()
    busy.default = Hang(30)
    registry = static_registry(
        generation_config("busy", busy.base_url, max_concurrent=1, max_queue=0, priority=0, read_timeout_s=20),
        generation_config("free", free.base_url, priority=1),
    )
    blocker = asyncio.create_task(collect(registry))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if busy.chat_requests:
            break
    _text, end = await collect(registry)
    assert end.endpoint == "free"
    blocker.cancel()
    await asyncio.gather(blocker, return_exceptions=True)


async def test_bad_input_is_refused_before_any_request(upstreams, static_registry):
    from inference.errors import InvalidRequest

    up = await upstreams()
    registry = static_registry(generation_config("a", up.base_url))
    with pytest.raises(InvalidRequest):
        await collect(registry, params=GenerationParams(max_tokens=0))
    with pytest.raises(InvalidRequest):
        async for _ in stream_chat(registry, []):
            pass
    assert up.chat_requests == []
