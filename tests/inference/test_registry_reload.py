"""The registry reads the endpoint table again before saying that no endpoint of a kind exists."""

from __future__ import annotations

import time

import pytest

from inference.config import EMBEDDING, GENERATION
from inference.registry import EMPTY_RECHECK_S, Registry, RegistryData
from tests.inference.conftest import generation_config

pytestmark = pytest.mark.fast


async def test_a_kind_missing_from_the_copy_is_looked_up_again_before_the_refresh_is_due(monkeypatch):
    tables = [
        RegistryData([generation_config("llm", "http://127.0.0.1:9/v1")]),
        RegistryData(
            [
                generation_config("llm", "http://127.0.0.1:9/v1"),
                generation_config("emb", "http://127.0.0.1:9/v1", kind=EMBEDDING),
            ]
        ),
    ]
    loads = []

    async def loader() -> RegistryData:
        loads.append(1)
        return tables[min(len(loads), 2) - 1]

    registry = Registry(loader, refresh_s=3600)
    assert [rt.name for rt in await registry.endpoints(GENERATION)] == ["llm"]
    # Another process re-created the embedding endpoint since: found without waiting an hour.
    assert [rt.name for rt in await registry.endpoints(EMBEDDING)] == ["emb"]
    assert len(loads) == 2
    # None of a kind: the table is read again at most once per EMPTY_RECHECK_S, not on every request.
    assert await registry.endpoints("reranker") == [] and await registry.endpoints("reranker") == []
    assert len(loads) == 2
    real = time.monotonic
    monkeypatch.setattr("inference.registry.time.monotonic", lambda: real() + EMPTY_RECHECK_S + 0.1)
    assert await registry.endpoints("reranker") == [] and await registry.endpoints("reranker") == []
    assert len(loads) == 3
    await registry.aclose()


async def test_a_hung_table_read_holds_the_request_at_most_the_recheck_interval():
    import asyncio

    hang = asyncio.Event()
    loads = []

    async def loader() -> RegistryData:
        loads.append(1)
        if len(loads) > 1:
            await hang.wait()  # the database stopped answering
        return RegistryData([generation_config("llm", "http://127.0.0.1:9/v1")])

    registry = Registry(loader, refresh_s=3600)
    await registry.endpoints(GENERATION)
    started = time.monotonic()
    assert await registry.endpoints(EMBEDDING) == []
    assert time.monotonic() - started < EMPTY_RECHECK_S + 0.5 and len(loads) == 2
    hang.set()
    await asyncio.sleep(0)
    await registry.aclose()
