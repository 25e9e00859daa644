"""Text generation over the generation endpoints of a registry (streaming and not).

``stream_chat`` is the token loop: no ORM, no blocking call, one pooled HTTP
client per endpoint. Attempts follow ``RoutePlan`` until the first token; from
then on the answer is committed to that endpoint and a failure becomes
``StreamInterrupted`` carrying the text received so far.

Tracing: one ``inference.generation`` span per call (all attempts), with the OpenTelemetry
GenAI attributes (model, token usage, finish reason), the time to the first token
(``inference.ttft_ms``, and a ``first_token`` event), the wait for an endpoint slot and the
endpoint that answered; the upstream HTTP request is its child. The span is never current
across a ``yield`` (monitoring/tracing.py says why): it is passed down to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from inference.clients.openai import OpenAIClient, completion_parts
from inference.config import GENERATION, EndpointConfig
from inference.errors import InferenceError, InvalidRequest, QueueFull, StreamInterrupted
from inference.registry import EndpointRuntime, Registry
from inference.routing import RoutePlan, call_with_failover
from inference.types import ChatMessage, Completion, GenerationParams, StreamEnd, StreamEvent, TokenDelta, Usage
from monitoring import metrics, tracing

# Keys the layer owns in the request body: parameters may not override them.
_RESERVED = {"model", "messages", "stream", "stream_options", "n"}


def validate(messages: Sequence[ChatMessage], params: GenerationParams) -> None:
    if not messages:
        raise InvalidRequest("at least one message is required")
    for message in messages:
        if message.role not in ("system", "user", "assistant"):
            raise InvalidRequest(f"unknown message role {message.role!r}")
        if not isinstance(message.content, str):
            raise InvalidRequest("message content must be text")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1")
    if params.temperature is not None and params.temperature < 0:
        raise InvalidRequest("temperature must not be negative")
    if params.top_p is not None and not 0 < params.top_p <= 1:
        raise InvalidRequest("top_p must be in (0, 1]")


def build_body(
    model: str, config: EndpointConfig, messages: Sequence[ChatMessage], params: GenerationParams
) -> dict[str, Any]:
    """The chat completion body: endpoint defaults, overridden by the caller's parameters."""
    body: dict[str, Any] = {k: v for k, v in config.default_params.items() if k not in _RESERVED}
    body.update({k: v for k, v in params.extra.items() if k not in _RESERVED})
    for name in ("max_tokens", "temperature", "top_p", "stop", "seed"):
        value = getattr(params, name)
        if value is not None:
            body[name] = value
    body["model"] = model
    body["messages"] = [m.as_dict() for m in messages]
    return body


async def stream_chat(
    registry: Registry,
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
    max_attempts: int | None = None,
    coalesce: bool = False,
) -> AsyncIterator[StreamEvent]:
    params = params or GenerationParams()
    validate(messages, params)
    loop = asyncio.get_running_loop()
    call_started = loop.time()
    span = _generation_span(params, streamed=True)
    # One try around the whole loop (not a wrapping generator: one layer less per token).
    failure: BaseException | None = None
    try:
        with tracing.use_span(span):  # an endpoint reload reads the database: under this span
            runtimes = await registry.endpoints(GENERATION)
        plan = RoutePlan(runtimes, kind=GENERATION, affinity_key=affinity_key, max_attempts=max_attempts)
        while True:
            rt = await plan.next()
            queued_at = loop.time()
            try:
                await rt.limiter.acquire()
            except BaseException as exc:
                rt.breaker.release()
                if isinstance(exc, QueueFull):
                    metrics.INFERENCE_REQUESTS.labels(rt.name, GENERATION, exc.code).inc()
                raise
            if span.is_recording():
                span.add_event("attempt", {"endpoint": rt.name, "queue_ms": round((loop.time() - queued_at) * 1000, 1)})
            parts: list[str] = []
            # Every inter-token gap is observed, into process memory; written out once per attempt.
            per_token = metrics.LocalHistogram(metrics.child(metrics.TIME_PER_OUTPUT_TOKEN, rt.name))
            try:
                client: OpenAIClient = rt.client()
                with tracing.use_span(span):  # the first call asks the server for its model name
                    model = await client.model()
                body = build_body(model, rt.config, messages, params)
                attempt_started = loop.time()
                first_at: float | None = None
                last_at = attempt_started
                finish: str | None = None
                usage: Usage | None = None
                chunks_with_text = 0
                stream = client.chat_stream(body, deadline=plan.deadline, coalesce=coalesce, span=span)
                async with contextlib.aclosing(stream) as chunks:
                    async for chunk in chunks:
                        model = chunk.model or model
                        finish = chunk.finish_reason or finish
                        usage = chunk.usage or usage
                        if not chunk.text:
                            continue
                        now = loop.time()
                        if first_at is None:
                            first_at = now
                            metrics.child(metrics.TIME_TO_FIRST_TOKEN, rt.name).observe(now - attempt_started)
                            if span.is_recording():
                                ttft_ms = round((now - call_started) * 1000, 1)
                                span.add_event("first_token", {"inference.ttft_ms": ttft_ms})
                                span.set_attribute("inference.ttft_ms", ttft_ms)
                        else:
                            # A coalesced chunk stands for `pieces` tokens: its gap is shared among them.
                            per_token.observe((now - last_at) / chunk.pieces, chunk.pieces)
                        last_at = now
                        chunks_with_text += chunk.pieces
                        parts.append(chunk.text)
                        yield TokenDelta(chunk.text, chunk.pieces)
            except InferenceError as exc:
                plan.failed(rt, exc)
                if parts:
                    raise StreamInterrupted(
                        f"interrupted after {len(parts)} chunks: {exc}", partial_text="".join(parts), endpoint=rt.name
                    ) from exc
                if exc.retryable:
                    continue
                raise
            except BaseException as exc:  # closed by the caller (GeneratorExit) or cancelled
                plan.abandoned(rt, exc)
                raise
            finally:
                per_token.flush()
                rt.limiter.release()
            plan.succeeded(rt)
            ended = loop.time()
            usage = usage or Usage(0, chunks_with_text)
            _record_tokens(rt, usage, ended - attempt_started, (ended - first_at) if first_at is not None else None)
            _span_outcome(span, rt.name, model, usage, finish)
            yield StreamEnd(
                finish_reason=finish,
                usage=usage,
                model=model,
                endpoint=rt.name,
                ttft_s=(first_at - call_started) if first_at is not None else None,
                duration_s=ended - call_started,
            )
            return
    except BaseException as exc:
        failure = exc
        raise
    finally:
        tracing.end_span(span, failure)


async def complete_chat(
    registry: Registry,
    messages: Sequence[ChatMessage],
    *,
    params: GenerationParams | None = None,
    affinity_key: str | None = None,
    max_attempts: int | None = None,
) -> Completion:
    params = params or GenerationParams()
    validate(messages, params)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def op(rt: EndpointRuntime, deadline: float) -> Completion:
        client: OpenAIClient = rt.client()
        model = await client.model()
        attempt_started = loop.time()
        data = await client.chat(build_body(model, rt.config, messages, params), deadline=deadline)
        text, finish, usage, answered_model = completion_parts(data, rt.name)
        _record_tokens(rt, usage, loop.time() - attempt_started, None)
        _span_outcome(span, rt.name, answered_model or model, usage, finish)
        return Completion(text, finish, usage, answered_model or model, rt.name, loop.time() - started)

    span = _generation_span(params, streamed=False)
    try:
        with tracing.use_span(span):
            completion = await call_with_failover(
                await registry.endpoints(GENERATION),
                op,
                kind=GENERATION,
                affinity_key=affinity_key,
                max_attempts=max_attempts,
            )
    except BaseException as exc:
        tracing.end_span(span, exc)
        raise
    tracing.end_span(span)
    return completion


def _generation_span(params: GenerationParams, *, streamed: bool) -> Any:
    """The span of one generation call (not current: see the module docstring)."""
    return tracing.start_span(
        "inference.generation",
        **{
            "gen_ai.operation.name": "chat",
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "inference.streamed": streamed,
        },
    )


def _span_outcome(span: Any, endpoint: str, model: str, usage: Usage, finish: str | None) -> None:
    if span.is_recording():
        span.set_attributes(
            {
                "inference.endpoint": endpoint,
                "gen_ai.response.model": model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": [finish or "unknown"],
            }
        )


def _record_tokens(rt: EndpointRuntime, usage: Usage, duration: float, decode_time: float | None) -> None:
    metrics.child(metrics.PROMPT_TOKENS, rt.name).inc(usage.prompt_tokens)
    metrics.child(metrics.TOKENS_GENERATED, rt.name).inc(usage.completion_tokens)
    metrics.child(metrics.INFERENCE_DURATION, rt.name, GENERATION).observe(duration)
    # Decode speed: after the first token when streaming, the whole call otherwise.
    window = decode_time if decode_time and usage.completion_tokens > 1 else duration
    tokens = usage.completion_tokens - 1 if decode_time and usage.completion_tokens > 1 else usage.completion_tokens
    if window > 0 and tokens > 0:
        metrics.child(metrics.TOKENS_PER_SECOND, rt.name).observe(tokens / window)
