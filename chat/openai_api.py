"""OpenAI-compatible endpoint: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The integrators' hot path: plain async Django views (no DRF, no sync ORM),
one Redis round trip for limiter + cache (the gateway contract), no database
write per token (none at all unless ``store: true``), orjson, and pre-rendered
byte templates for stream chunks. The official ``openai`` SDK works unchanged
(``base_url=<server>/v1``, ``api_key=<platform API key>``).

Platform extras (``extra_body`` in the SDK): ``retrieval`` (bool; default: the
admin setting, on), ``collection`` (id or slug), ``store`` (keep the exchange as a
conversation). Responses add ``sources`` (the numbered sources given to the model,
``cited`` marking those the answer used); in a stream they ride on the chunk that
carries ``finish_reason``. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with the matching status.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat import services
from chat.errors import AuthenticationRequired, MethodNotAllowed, PlatformError, RateLimited, ValidationFailed
from chat.gateway.auth import authenticate_bearer, client_ip, require_scope, subject_for
from chat.gateway.validation import parse_json_body, validate_chat_request
from chat.types import End, Error, Sources, Start, Token
from monitoring.metrics import CHAT_ERRORS

OWNED_BY = "vacant-house-platform"
MODELS_CACHE_S = 30.0


# --- errors in OpenAI's shape ----------------------------------------------------------


def _openai_type(err: PlatformError) -> str:
    if isinstance(err, RateLimited):
        return "tokens" if err.extra.get("reason") == "tokens" else "requests"
    if err.status == 401:
        return "authentication_error"
    if err.status == 403:
        return "permission_error"
    if err.status >= 500:
        return "server_error"
    return "invalid_request_error"


def _openai_code(err: PlatformError) -> str:
    if isinstance(err, RateLimited):
        return "rate_limit_exceeded"
    if err.status == 401:
        return "invalid_api_key"
    return err.code


def openai_error_body(err: PlatformError) -> dict[str, Any]:
    param = next(iter(err.fields), None) if err.fields else None
    return {"error": {"message": err.text, "type": _openai_type(err), "param": param, "code": _openai_code(err)}}


def openai_error(err: PlatformError) -> HttpResponse:
    CHAT_ERRORS.labels(err.code).inc()
    response = HttpResponse(orjson.dumps(openai_error_body(err)), status=err.status, content_type="application/json")
    for name, value in (err.headers or {}).items():
        response[name] = value
    if err.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


async def _principal(request: HttpRequest, *, admitted: bool = False) -> Any:
    # admitted: the request goes through gateway.admit(), which checks a cached key's
    # revocation in its own Redis round trip (one round trip before the answer, not two).
    principal = await authenticate_bearer(request.headers.get("Authorization"), defer_revocation_check=admitted)
    if principal is None:
        raise AuthenticationRequired("Send your API key: 'Authorization: Bearer <key>'.")
    require_scope(principal, "chat")
    return principal


# --- /v1/chat/completions ------------------------------------------------------------------


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return openai_error(MethodNotAllowed("Use POST."))
    try:
        principal = await _principal(request, admitted=True)
        payload = parse_json_body(request.body)
        validated = validate_chat_request(payload, openai=True, extra_fields=("store",))
        store = validated.extra.get("store", settings.CHAT_OPENAI_STORE_DEFAULT)
        if not isinstance(store, bool):
            raise ValidationFailed("store: must be true or false.", fields={"store": ["Must be true or false."]})
    except PlatformError as exc:
        return openai_error(exc)

    options = services.ChatOptions(
        # Absent: the admin setting decides (on by default); the validator's default would hide that.
        retrieval=validated.retrieval if "retrieval" in payload else None,
        collections=(validated.collection,) if validated.collection is not None else None,
        params=validated.params,
        model=validated.model,
        principal=principal,
        stream=validated.stream,
    )
    subject = subject_for(principal=principal, ip=client_ip(request.META))
    events = services.complete(subject=subject, messages=validated.messages, store=store, options=options)
    first = await events.__anext__()
    if isinstance(first, Error):
        await events.aclose()
        return openai_error(first.error)
    model = validated.model or first.model or settings.VLLM_MODEL or "default"
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if validated.stream:
        stream = _ChunkWriter(completion_id, model, include_usage=validated.include_usage)
        response = StreamingHttpResponse(stream.render(first, events), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    final = await services.collect(events)
    if isinstance(final, Error):
        return openai_error(final.error)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": final.content},
                "logprobs": None,
                "finish_reason": final.finish_reason or "stop",
            }
        ],
        "usage": final.usage,
        "sources": final.citations,
    }
    if final.conversation_id is not None:
        body["conversation_id"] = str(final.conversation_id)
    return HttpResponse(orjson.dumps(body), content_type="application/json")


class _ChunkWriter:
    """OpenAI ``chat.completion.chunk`` events; a token costs one ``orjson.dumps`` of its text."""

    def __init__(self, completion_id: str, model: str, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.head = orjson.dumps(
            {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        )[:-1]  # without the closing brace: each event appends its own fields
        self.token_prefix = b"data: " + self.head + b',"choices":[{"index":0,"delta":{"content":'
        self.token_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def event(self, fields: dict[str, Any]) -> bytes:
        return b"data: " + self.head + b"," + orjson.dumps(fields)[1:] + b"\n\n"

    async def render(self, first: Any, events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        async with aclosing(events) as stream:
            event = first
            while True:
                if type(event) is Token:
                    yield self.token_prefix + orjson.dumps(event.text) + self.token_suffix
                elif isinstance(event, Start):
                    yield self.event(
                        {
                            "choices": [
                                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                            ]
                        }
                    )
                elif isinstance(event, Sources):
                    pass  # sent with the final chunk, once the citations are known
                elif isinstance(event, End):
                    final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": event.finish_reason or "stop"}
                    extra: dict[str, Any] = {"sources": event.citations}
                    if event.conversation_id is not None:
                        extra["conversation_id"] = str(event.conversation_id)
                    yield self.event({"choices": [final], **extra})
                    if self.include_usage:
                        yield self.event({"choices": [], "usage": event.usage})
                    yield b"data: [DONE]\n\n"
                    return
                elif isinstance(event, Error):
                    # OpenAI's way of failing mid-stream: an error event, then the stream ends.
                    CHAT_ERRORS.labels(event.code).inc()
                    yield b"data: " + orjson.dumps(openai_error_body(event.error)) + b"\n\n"
                    return
                try:
                    event = await stream.__anext__()
                except StopAsyncIteration:
                    return


# --- /v1/models ------------------------------------------------------------------------------

_models: tuple[float, list[str]] | None = None


async def _model_names() -> list[str]:
    global _models
    now = time.monotonic()
    if _models is not None and _models[0] > now:
        return _models[1]
    from inference.services import list_models

    try:
        per_endpoint = await list_models()
    except Exception:
        per_endpoint = {}
    names = sorted({name for names in per_endpoint.values() for name in names})
    if not names:
        names = [settings.VLLM_MODEL or "default"]
    _models = (now + MODELS_CACHE_S, names)
    return names


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return openai_error(MethodNotAllowed("Use GET."))
    try:
        await _principal(request)
    except PlatformError as exc:
        return openai_error(exc)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY} for name in await _model_names()]
    return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")
