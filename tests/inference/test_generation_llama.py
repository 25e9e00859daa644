"""Generation against the real OpenAI-compatible server (llama.cpp here, vLLM in production).

Through the public services, with the database-backed registry: the ``vllm``
endpoint is created from VLLM_URL on first use, exactly as in a deployment.
The model is tiny and incoherent: assertions are on protocol, usage and timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection

from inference import services
from inference.models import ModelEndpoint
from inference.types import ChatMessage, GenerationParams, StreamEnd, TokenDelta
from tests.inference.conftest import require_env

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

MESSAGES = [ChatMessage("system", "You are brief."), ChatMessage("user", "Name three colours.")]


@pytest.fixture(autouse=True)
def _needs_llm():
    require_env("VLLM_URL", "DATABASE_URL")


async def in_thread(fn):
    """Run ORM code in a worker thread and close its connection (the test database must drop cleanly)."""

    def run():
        try:
            return fn()
        finally:
            connection.close()

    return await sync_to_async(run, thread_sensitive=False)()


def server_root() -> str:
    return os.environ["VLLM_URL"].rstrip("/").removesuffix("/v1")


async def test_it_streams_tokens_then_one_end_with_usage(db_registry):
    deltas, ends = [], []
    async for event in services.generate_stream(MESSAGES, params=GenerationParams(max_tokens=8, temperature=0)):
        (deltas if isinstance(event, TokenDelta) else ends).append(event)
    assert deltas and all(isinstance(d, TokenDelta) and d.text for d in deltas)
    (end,) = ends
    assert isinstance(end, StreamEnd) and end.endpoint == "vllm"
    assert end.usage.prompt_tokens > 5
    assert 1 <= end.usage.completion_tokens <= 8
    assert end.finish_reason in ("length", "stop")
    assert 0 < end.ttft_s <= end.duration_s
    # The endpoint row was created from VLLM_URL on first use.
    row = await in_thread(lambda: ModelEndpoint.objects.get(name="vllm"))
    assert row.source == "env" and row.base_url == os.environ["VLLM_URL"]


async def test_it_answers_without_streaming_with_usage(db_registry):
    completion = await services.generate(MESSAGES, params=GenerationParams(max_tokens=6, temperature=0))
    assert completion.text and completion.endpoint == "vllm"
    assert completion.usage.prompt_tokens > 5 and 1 <= completion.usage.completion_tokens <= 6
    # Deterministic at temperature 0: streaming and non-streaming agree.
    streamed = []
    async for event in services.generate_stream(MESSAGES, params=GenerationParams(max_tokens=6, temperature=0)):
        if isinstance(event, TokenDelta):
            streamed.append(event.text)
    assert "".join(streamed) == completion.text


async def test_it_lists_the_served_models_through_the_client(db_registry):
    models = await services.list_models()
    assert os.environ.get("VLLM_MODEL", "smollm2") in models["vllm"]


async def our_slot(http: httpx.AsyncClient, marker: int) -> dict | None:
    """Our request's slot in llama.cpp's /slots (found by its unusual max_tokens)."""
    slots = (await http.get("/slots")).json()
    ours = [s for s in slots if s.get("params", {}).get("max_tokens") == marker]
    return ours[0] if ours else None


async def assert_generation_stops(http: httpx.AsyncClient, marker: int) -> None:
    """The slot stops within 5 s; finishing its 1000+ tokens would take 9 s even at full speed (110 tok/s)."""
    closed_at = time.perf_counter()
    while time.perf_counter() - closed_at < 5.0:
        slot = await our_slot(http, marker)
        if slot is not None and not slot["is_processing"]:
            # Stopped, not finished: llama.cpp leaves has_next_token set on a released slot.
            assert slot["next_token"][0]["has_next_token"] is True
            return
        await asyncio.sleep(0.05)
    pytest.fail("the slot kept generating after the stream was closed: the upstream connection stayed open")


async def test_closing_the_stream_stops_generation_upstream(db_registry):
    """llama.cpp's own /slots: our slot is generating, we close the stream, the slot stops at once."""
    marker = random.randint(1000, 1999)  # unique per run: stale slots keep their last params
    params = GenerationParams(max_tokens=marker, temperature=0.8, extra={"ignore_eos": True})
    stream = services.generate_stream([ChatMessage("user", "Write a very long story about a house.")], params=params)
    async with httpx.AsyncClient(base_url=server_root(), timeout=5) as http:
        got = 0
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, TokenDelta):
                    got += 1
                    if got == 3:
                        slot = await our_slot(http, marker)
                        assert slot is not None and slot["is_processing"], "our request is being generated"
                        break
        await assert_generation_stops(http, marker)


async def test_cancelling_the_consumer_stops_generation_upstream(db_registry):
    marker = random.randint(1000, 1999)
    params = GenerationParams(max_tokens=marker, temperature=0.8, extra={"ignore_eos": True})
    first = asyncio.Event()

    async def consume() -> None:
        async for event in services.generate_stream([ChatMessage("user", "Count to a thousand.")], params=params):
            if isinstance(event, TokenDelta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 60)
    async with httpx.AsyncClient(base_url=server_root(), timeout=5) as http:
        slot = await our_slot(http, marker)
        assert slot is not None and slot["is_processing"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_generation_stops(http, marker)


def test_check_endpoints_records_health(transactional_db):
    call_command("sync_endpoints")
    call_command("check_endpoints", "vllm")
    row = ModelEndpoint.objects.get(name="vllm")
    assert row.healthy is True and row.last_latency_ms > 0 and row.last_error == ""
    assert row.last_check_at is not None


def test_sync_endpoints_is_idempotent_and_keeps_admin_tuning(transactional_db):
    call_command("sync_endpoints")
    ModelEndpoint.objects.filter(name="vllm").update(weight=7, enabled=False)
    call_command("sync_endpoints")
    row = ModelEndpoint.objects.get(name="vllm")
    assert (row.weight, row.enabled, row.source) == (7, False, "env")
    assert ModelEndpoint.objects.filter(name="vllm").count() == 1


async def test_without_vllm_url_the_local_llama_server_is_the_default(db_registry, settings):
    settings.VLLM_URL = None
    settings.LOCAL_LLM_URL = os.environ["VLLM_URL"]  # the llama.cpp server the local run starts
    completion = await services.generate([ChatMessage("user", "Hi")], params=GenerationParams(max_tokens=3))
    assert completion.endpoint == "local-llm" and completion.usage.completion_tokens >= 1
