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
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat import services
from chat.errors import AuthenticationRequired, MethodNotAllowed, PlatformError, ValidationFailed
from chat.gateway.auth import authenticate_bearer, client_ip, require_scope, subject_for
from chat.gateway.validation import parse_json_body, validate_chat_request
from chat.renderers.openai import ChunkWriter, completion_body, openai_error_response
from chat.types import Error
from monitoring.metrics import CHAT_ERRORS

OWNED_BY = "vacant-house-platform"
MODELS_CACHE_S = 30.0


def _refused(err: PlatformError) -> HttpResponse:
    """A request refused before the answer pipeline ran (auth, validation): counted here."""
    CHAT_ERRORS.labels(err.code).inc()
    return openai_error_response(err)


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
        return _refused(MethodNotAllowed("Use POST."))
    try:
        principal = await _principal(request, admitted=True)
        payload = parse_json_body(request.body)
        validated = validate_chat_request(payload, openai=True, extra_fields=("store",))
        store = validated.extra.get("store", settings.CHAT_OPENAI_STORE_DEFAULT)
        if not isinstance(store, bool):
            raise ValidationFailed("store: must be true or false.", fields={"store": ["Must be true or false."]})
    except PlatformError as exc:
        return _refused(exc)

    options = services.ChatOptions(
        # Absent: the admin setting decides (on by default); the validator's default would hide that.
        retrieval=validated.retrieval if "retrieval" in payload else None,
        collections=(validated.collection,) if validated.collection is not None else None,
        params=validated.params,
        model=validated.model,
        principal=principal,
        stream=validated.stream,
        answer_mode=validated.answer_mode,
    )
    subject = subject_for(principal=principal, ip=client_ip(request.META))
    events = services.complete(subject=subject, messages=validated.messages, store=store, options=options)
    first = await events.__anext__()
    if isinstance(first, Error):
        await events.aclose()
        return openai_error_response(first.error)
    model = validated.model or first.model or settings.VLLM_MODEL or "default"
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if validated.stream:
        stream = ChunkWriter(completion_id, model, include_usage=validated.include_usage)
        response = StreamingHttpResponse(stream.render(first, events), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

    final = await services.collect(events)
    if isinstance(final, Error):
        return openai_error_response(final.error)
    return HttpResponse(
        orjson.dumps(completion_body(final, completion_id=completion_id, model=model)), content_type="application/json"
    )


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
        return _refused(MethodNotAllowed("Use GET."))
    try:
        await _principal(request)
    except PlatformError as exc:
        return _refused(exc)
    data = [{"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY} for name in await _model_names()]
    return HttpResponse(orjson.dumps({"object": "list", "data": data}), content_type="application/json")
