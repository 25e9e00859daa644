"""Against the real Triton: metadata, micro-batching seen in Triton's own metrics, the public services."""

from __future__ import annotations

import asyncio
import os
import re

import httpx
import numpy as np
import pytest

from inference import services
from inference.clients.triton import TritonClient
from inference.config import EMBEDDING, RERANKER, TRITON_GRPC, TRITON_HTTP, EndpointConfig
from inference.embeddings import TritonEmbeddingBackend
from inference.registry import Registry
from tests.inference.conftest import require_env

pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _needs_triton():
    require_env("TRITON_URL", "TRITON_GRPC_URL", "TRITON_METRICS_URL")


def embedding_config(protocol: str = TRITON_HTTP, **overrides) -> EndpointConfig:
    url = os.environ["TRITON_GRPC_URL"] if protocol == TRITON_GRPC else os.environ["TRITON_URL"]
    values = dict(name=f"emb-{protocol}", kind=EMBEDDING, protocol=protocol, base_url=url, model_name="embedding")
    values.update(overrides)
    return EndpointConfig(**values)


async def triton_counts(model: str) -> tuple[float, float]:
    """(nv_inference_count, nv_inference_exec_count) of ``model`` from Triton's metrics endpoint."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(os.environ["TRITON_METRICS_URL"])).text

    def value(name: str) -> float:
        match = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
        assert match, f"{name} for {model} not in Triton metrics"
        return float(match.group(1))

    return value("nv_inference_count"), value("nv_inference_exec_count")


@pytest.mark.parametrize("protocol", [TRITON_HTTP, TRITON_GRPC])
async def test_the_dimension_and_batch_limit_come_from_model_metadata(protocol):
    client = TritonClient(embedding_config(protocol))
    try:
        assert await client.server_ready(timeout=5) and await client.model_ready(timeout=5)
        info = await client.model_info()
        assert info.output_width("EMBEDDING") == 384
        assert info.max_batch_size == 64
        assert info.inputs["TEXT"][0] == "BYTES"
    finally:
        await client.aclose()


async def test_micro_batching_is_visible_in_tritons_metrics():
    """64 concurrent single-text callers become a few model executions."""
    registry = Registry.static([embedding_config()])
    backend = TritonEmbeddingBackend(registry, batching=True, max_batch_size=64, max_wait_ms=20)
    try:
        await backend.embed(["warm-up"], query=True)  # connections and metadata ready
        count_before, exec_before = await triton_counts("embedding")
        texts = [f"빈집 지원 정책 질문 {i}" for i in range(64)]
        vectors = await asyncio.gather(*(backend.embed([t], query=True) for t in texts))
        count_after, exec_after = await triton_counts("embedding")
    finally:
        await registry.aclose()
    assert all(v.shape == (1, 384) for v in vectors)
    inferences, executions = count_after - count_before, exec_after - exec_before
    # Other tests may share this Triton; ours alone are 64 inferences in ~1-4 executions.
    assert inferences >= 64
    assert executions <= inferences / 8, f"{executions} executions for {inferences} inferences"
    batcher = backend._batchers.peek()[EMBEDDING]
    assert batcher.batches_sent <= 1 + 4  # the warm-up, then a handful of shared calls


async def test_each_caller_gets_its_own_vector_back():
    registry = Registry.static([embedding_config()])
    backend = TritonEmbeddingBackend(registry, max_wait_ms=20)
    try:
        texts = ["빈집 철거", "점심 메뉴", "리모델링 지원", "주차 요금"]
        shared = await asyncio.gather(*(backend.embed([t], query=False) for t in texts))
        alone = await TritonEmbeddingBackend(registry, batching=False).embed(texts, query=False)
    finally:
        await registry.aclose()
    assert np.allclose(np.concatenate(shared), alone, atol=1e-5)


async def test_a_large_input_is_split_into_model_sized_batches():
    registry = Registry.static([embedding_config()])
    try:
        vectors = await TritonEmbeddingBackend(registry, batching=False, max_batch_size=200).embed(
            [f"문서 {i}" for i in range(150)], query=False
        )
    finally:
        await registry.aclose()
    assert vectors.shape == (150, 384)


async def test_the_public_services_use_triton_endpoints_from_the_environment(db_registry):
    vector = await services.embed_query("빈집 철거 보조금")
    passages = await services.embed_passages(["빈집 철거 보조금 안내", "오늘의 날씨"])
    assert vector.shape == (384,) and passages.shape == (2, 384)
    assert services.embedding_dim() == 384
    assert await services.embedding_dim_async() == 384
    assert services.embedding_model_name() == "multilingual-e5-small"
    assert services.reranker_available()
    scores = await services.rerank("빈집 철거 보조금", ["빈집 철거 보조금 안내", "오늘의 날씨"])
    assert scores[0] > scores[1]
    names = {rt.name for rt in db_registry.snapshot()}
    assert {"vllm", "triton-embedding", "triton-reranker"} <= names


def _detail(settings) -> dict[str, str]:
    """Settings for /readyz's detail, fresh each time: the internal token header."""
    from monitoring.health import forget_report

    forget_report()
    settings.READYZ_TIMEOUT = 10  # the shared 2-core box can be slow; the bound itself is monitoring's
    settings.READYZ_TOKEN = "readyz-test-token"
    return {"Authorization": "Bearer readyz-test-token"}


async def test_readyz_has_one_check_per_endpoint_kind_naming_each_endpoint(db_registry, async_client, settings):
    headers = _detail(settings)
    await db_registry.all_endpoints()  # as after the first request of the process
    response = await async_client.get("/readyz", headers=headers)
    checks = response.json()["checks"]
    for name, endpoint in (
        ("inference:generation", "vllm"),
        ("inference:embedding", "triton-embedding"),
        ("inference:reranker", "triton-reranker"),
    ):
        assert checks[name]["status"] == "ok", checks[name]["detail"]
        assert f"{endpoint}: ok" in checks[name]["detail"]
    assert checks["inference:generation"]["required"] is True
    assert checks["inference:embedding"]["required"] is False
    assert checks["inference:reranker"]["required"] is False


async def test_readyz_before_the_registry_is_loaded_loads_and_probes_the_required_kinds(
    db_registry, async_client, settings
):
    headers = _detail(settings)
    assert not db_registry.loaded
    response = await async_client.get("/readyz", headers=headers)
    check = response.json()["checks"]["inference"]
    assert check["status"] == "ok", check["detail"]
    assert "generation: 1/1 usable" in check["detail"]
    assert db_registry.loaded


async def test_readyz_fails_while_every_generation_endpoint_is_behind_an_open_breaker(
    db_registry, async_client, settings
):
    """The endpoint answers its probe again, but the breaker still refuses every request: not ready."""
    headers = _detail(settings)
    runtimes = await db_registry.all_endpoints()
    (vllm,) = [rt for rt in runtimes if rt.kind == "generation"]
    for _ in range(vllm.breaker.failure_threshold):
        vllm.breaker.record_failure()
    try:
        response = await async_client.get("/readyz", headers=headers)
        check = response.json()["checks"]["inference:generation"]
        assert response.status_code == 503 and check["status"] == "down"
        assert "breaker open" in check["detail"]
    finally:
        vllm.breaker.record_success()
    _detail(settings)
    assert (await async_client.get("/readyz", headers=headers)).status_code == 200


async def test_an_unreachable_triton_is_reported_down(async_client):
    registry = Registry.static(
        [
            EndpointConfig(
                name="dead", kind=RERANKER, protocol=TRITON_HTTP, base_url="http://127.0.0.1:9", model_name="x"
            )
        ]
    )
    from inference.health import probe_runtime

    (rt,) = await registry.all_endpoints()
    with pytest.raises(Exception, match=r"(?i)connect"):
        await probe_runtime(rt, timeout=2)
    assert rt.health.ok is False and not rt.usable()
    await registry.aclose()


def test_sync_callers_share_one_long_lived_client(db_registry):
    """embed_passages_sync runs on the layer's own loop: the second call reuses the first one's connection."""
    first = services.embed_passages_sync(["빈집 철거 보조금 안내"])
    second = services.embed_passages_sync(["빈집 리모델링 지원", "오늘의 날씨"])
    assert first.shape == (1, 384) and second.shape == (2, 384)
    assert services.embedding_dim() == 384
    (rt,) = [rt for rt in db_registry.snapshot() if rt.name == "triton-embedding"]
    assert len(rt._clients) == 1  # one client, on the bridge loop, for every sync call
