"""The platform's one error family: every domain error is a ``PlatformError``.

Each app subclasses it (``inference.errors``, ``knowledge.errors``, ``chat.errors``),
so an adapter catches one class and renders one shape, whichever layer failed::

    {"error": {"code": "rate_limited", "message": "...", "fields": {...}, ...extra}}

- ``code``: stable, machine-readable; clients branch on it.
- ``http_status``: what a REST/HTTP adapter answers with.
- ``message``: safe to show to the caller (never upstream or internal detail; that
  goes to the log).
- ``fields``: per-field problems of a request (``{"messages[0].content": ["..."]}``).
- ``headers``: HTTP headers to send with the error (``Retry-After``, ``X-RateLimit-*``).
- ``extra``: further public keys of the body (``retry_after``, ``scope``...).

Renderers (the websocket frame, SSE, OpenAI's shape, DRF) live in ``chat.renderers``
and ``config.drf``; this module is a leaf: it imports nothing of the project.
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    code: str = "error"
    http_status: int = 400
    message: str = "The request failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.message = message or type(self).message
        super().__init__(self.message)
        self.fields = fields or {}
        self.headers = headers or {}
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        """The body every platform adapter sends: ``{"error": {"code", "message", ...}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.extra)
        return {"error": body}


# --- generic request errors, shared by every app ------------------------------------------


class ValidationFailed(PlatformError):
    code = "invalid_request"
    http_status = 400
    message = "The request is invalid."


class PayloadTooLarge(ValidationFailed):
    code = "payload_too_large"
    http_status = 413
    message = "The request is too large."


class UnprocessableRequest(ValidationFailed):
    code = "unprocessable"
    http_status = 422
    message = "The request is well-formed but cannot be processed."


class AuthenticationRequired(PlatformError):
    code = "authentication_required"
    http_status = 401
    message = "Authentication is required."


class PermissionDenied(PlatformError):
    code = "permission_denied"
    http_status = 403
    message = "You may not do this."


class NotFound(PlatformError):
    code = "not_found"
    http_status = 404
    message = "Not found."


class MethodNotAllowed(PlatformError):
    code = "method_not_allowed"
    http_status = 405
    message = "This method is not allowed here."


class RateLimited(PlatformError):
    code = "rate_limited"
    http_status = 429
    message = "Too many requests; slow down."


class ServiceUnavailable(PlatformError):
    """A dependency the request needs is down; retrying later may help."""

    code = "service_unavailable"
    http_status = 503
    message = "The service is unavailable right now."


class StorageUnavailable(ServiceUnavailable):
    """The database (or another store the request needs) does not answer; a retry in a few seconds may work."""

    message = "The service is temporarily unavailable; try again in a few seconds."

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kwargs)


class InternalError(PlatformError):
    """A bug or an unexpected failure; the detail is in the log, never in the body."""

    code = "internal_error"
    http_status = 500
    message = "Something went wrong on our side."
