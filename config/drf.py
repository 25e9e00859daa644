"""The one DRF exception handler: every REST error in the platform's shape.

``{"error": {"code", "message", "fields"?, ...}}`` for platform errors (any app's) and for
DRF's own (validation, authentication, permission, parsing, throttling), so integrators
parse one shape whichever view failed. Unexpected exceptions are logged and answered
with a generic ``internal_error`` and the request id, never a traceback or Django's HTML; an
unreachable dependency (the database mid-restart) is a 503 ``service_unavailable`` with
``Retry-After``, logged once per outage interval rather than once per request.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.error_views import unavailable
from config.errors import InternalError, PlatformError, ValidationFailed
from monitoring.logging import get_request_id
from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)


def error_response(err: PlatformError) -> Response:
    return Response(err.as_dict(), status=err.http_status, headers=err.headers or None)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, PlatformError):
        return error_response(exc)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(ValidationFailed("The request is invalid.", fields=detail))
    if is_unreachable_error(exc):
        return error_response(unavailable())
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in %s", type(context.get("view")).__name__, exc_info=exc)
        return error_response(InternalError(request_id=get_request_id()))
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    code = getattr(detail, "code", None) or "error"
    response.data = {"error": {"code": code, "message": str(detail) if detail is not None else "The request failed."}}
    return response


class BoundedPagination(LimitOffsetPagination):
    """``?limit=&offset=`` pages of at most API_MAX_PAGE_SIZE rows (a larger ``limit`` gets the maximum).

    The default list pagination of every DRF view (REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"]):
    without a maximum, one anonymous ``?limit=100000000`` would read a whole table.
    """

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE
