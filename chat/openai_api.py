"""OpenAI-compatible endpoint: ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``.

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

``model`` names a model group (or an alias of one) the key may use; anything else is
OpenAI's 404 ``model_not_found``. The response's ``model`` is the group's name, or its
fallback's when a fallback answered. The views only parse, call one service and render:
the logic is in ``chat.services`` (model_routing, embeddings, answer_pipeline).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat import services
from chat.config import get_config
from chat.errors import AuthenticationRequired, MethodNotAllowed, PlatformError, ValidationFailed
from chat.gateway.auth import authenticate_bearer, client_ip, require_scope, subject_for
from chat.gateway.validation import parse_json_body, validate_chat_request
from chat.renderers.openai import (
    ChunkWriter,
    completion_body,
    embeddings_json,
    model_object,
    models_body,
    openai_error_response,
)
from chat.services.embeddings import embeddings_create
from chat.services.model_routing import model_choose, models_for
from chat.types import Error
from inference.config import EMBEDDING
from monitoring.metrics import CHAT_ERRORS

OWNED_BY = "vacant-house-platform"


def refused(err: PlatformError) -> HttpResponse:
    """A request refused before the answer pipeline ran (auth, validation): counted here."""
    CHAT_ERRORS.labels(err.code).inc()
    return openai_error_response(err)


async def _principal(request: HttpRequest, *, admitted: bool = False) -> Any:
    # admitted: the request goes through gateway.admit(), which checks a cached key's
    # revocation in its own Redis round trip (one round trip before the answer, not two).
    # META, not request.headers: the latter builds a dict of every header on first use.
    principal = await authenticate_bearer(request.META.get("HTTP_AUTHORIZATION"), defer_revocation_check=admitted)
    if principal is None:
        raise AuthenticationRequired("Send your API key: 'Authorization: Bearer <key>'.")
    require_scope(principal, "chat")
    return principal


# --- /v1/chat/completions ------------------------------------------------------------------


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return refused(MethodNotAllowed("Use POST."))
    try:
        principal = await _principal(request, admitted=True)
        payload = parse_json_body(request.body)
        validated = validate_chat_request(payload, openai=True, extra_fields=("store",))
        store = validated.extra.get("store", settings.CHAT_OPENAI_STORE_DEFAULT)
        if not isinstance(store, bool):
            raise ValidationFailed("store: must be true or false.", fields={"store": ["Must be true or false."]})
    except PlatformError as exc:
        return refused(exc)

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
    # The model group that answers (the one asked for, or its fallback); Start names it.
    model = first.model or validated.model or "default"
    completion_id = f"chatcmpl-{secrets.token_hex(16)}"
    if validated.stream:
        stream = ChunkWriter(completion_id, model, include_usage=validated.include_usage)
        response = StreamingHttpResponse(stream.render(first, events), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return _with_headers(response, first)

    final = await services.collect(events)
    if isinstance(final, Error):
        return openai_error_response(final.error)
    body = completion_body(final, completion_id=completion_id, model=final.model_group or model)
    return _with_headers(HttpResponse(orjson.dumps(body), content_type="application/json"), first)


def _with_headers(response: HttpResponse, first: Any) -> HttpResponse:
    """The limits' and budget's X-RateLimit-* / X-Budget-* headers (the Start event carries them)."""
    for name, value in getattr(first, "headers", {}).items():
        response[name] = value
    return response


# --- /v1/embeddings ---------------------------------------------------------------------------


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return refused(MethodNotAllowed("Use POST."))
    try:
        principal = await _principal(request, admitted=True)
        subject = subject_for(principal=principal, ip=client_ip(request.META))
        result = await embeddings_create(subject=subject, payload=parse_json_body(request.body))
    except PlatformError as exc:
        return refused(exc)
    body = embeddings_json(
        result.model, result.vectors, prompt_tokens=result.prompt_tokens, encoding_format=result.encoding_format
    )
    response = HttpResponse(body, content_type="application/json")
    for name, value in result.headers.items():
        response[name] = value
    return response


# --- /v1/models ------------------------------------------------------------------------------


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """The model groups this key may use (chat and embedding), by name; aliases work but are not listed."""
    if request.method != "GET":
        return refused(MethodNotAllowed("Use GET."))
    try:
        principal = await _principal(request)
    except PlatformError as exc:
        return refused(exc)
    subject = subject_for(principal=principal, ip=client_ip(request.META))
    groups = await models_for(subject, default=(await get_config()).default_model)
    return HttpResponse(
        orjson.dumps(models_body([g.name for g in groups], owned_by=OWNED_BY)), content_type="application/json"
    )


@csrf_exempt
async def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    """``GET /v1/models/{model}`` (``client.models.retrieve``): the group a name or alias reaches, or 404."""
    if request.method != "GET":
        return refused(MethodNotAllowed("Use GET."))
    try:
        principal = await _principal(request)
        subject = subject_for(principal=principal, ip=client_ip(request.META))
        try:
            choice = await model_choose(subject, name, default=(await get_config()).default_model)
        except PlatformError:
            choice = await model_choose(subject, name, kind=EMBEDDING)
    except PlatformError as exc:
        return refused(exc)
    return HttpResponse(orjson.dumps(model_object(choice.name, owned_by=OWNED_BY)), content_type="application/json")
