"""Django's error views (handler400/403/404/500), in the API's JSON shape under /api/ and /v1/.

Django answers an unknown URL, or an exception no view caught, with an HTML page; an API
client then fails to parse the body and loses the error. Under the API prefixes these views
answer ``{"error": {"code", "message", "request_id", ...}}`` instead (for /v1/ also OpenAI's
``type`` and ``param``, so the SDKs raise their usual classes); pages keep Django's templates.

A dependency fault is not a bug: when the exception (or, where Django does not pass it on,
a database failure moments ago) says PostgreSQL or Redis is unreachable, the answer is 503
``service_unavailable`` with ``Retry-After``, not 500. Users see a generic message and the
request id; the detail is in the log line carrying that id (issue #18).
"""

from __future__ import annotations

import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django.views import defaults

from config.errors import (
    InternalError,
    NotFound,
    PermissionDenied,
    PlatformError,
    StorageUnavailable,
    ValidationFailed,
)
from monitoring.logging import get_request_id
from monitoring.outages import is_unreachable_error, outage

API_PREFIXES = ("/api/", "/v1/")
# A 500 this soon after the database failed is taken for that outage (Django runs the
# handler in another thread than the one that saw the exception, so it cannot always tell).
RECENT_FAILURE_S = 5.0
RETRY_AFTER_S = 5


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def unavailable() -> StorageUnavailable:
    return StorageUnavailable(headers={"Retry-After": str(RETRY_AFTER_S)})


def error_body(request: HttpRequest, err: PlatformError) -> dict[str, Any]:
    body = err.as_dict()
    body["error"]["request_id"] = get_request_id()
    if request.path.startswith("/v1/"):
        # OpenAI's error fields besides the platform's, so the official SDKs classify it.
        body["error"].setdefault("type", "server_error" if err.http_status >= 500 else "invalid_request_error")
        body["error"].setdefault("param", None)
    return body


def json_error(request: HttpRequest, err: PlatformError) -> JsonResponse:
    response = JsonResponse(error_body(request, err), status=err.http_status)
    for name, value in err.headers.items():
        response[name] = value
    return response


def _unavailable_page(request: HttpRequest) -> HttpResponse:
    request_id = escape(get_request_id() or "-")
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>503</title></head><body>"
        "<h1>잠시 후 다시 시도해 주세요 / Please try again shortly</h1>"
        f"<p>The service is temporarily unavailable. Request id: <code>{request_id}</code></p></body></html>"
    )
    return HttpResponse(html, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return json_error(request, ValidationFailed())
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        return json_error(request, PermissionDenied())
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api(request):
        hint = "see /api/docs/" if request.path.startswith("/api/") else "see GET /v1/models"
        return json_error(request, NotFound(f"No such API endpoint ({hint})."))
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    exc = sys.exc_info()[1]
    fault = is_unreachable_error(exc) if exc is not None else outage("database").failed_within(RECENT_FAILURE_S)
    if is_api(request):
        return json_error(request, unavailable() if fault else InternalError())
    return _unavailable_page(request) if fault else defaults.server_error(request)
