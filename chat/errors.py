"""Domain errors of the request path, rendered uniformly by every adapter.

One shape everywhere (REST, SSE and websocket ``error`` frames)::

    {"error": {"code": "rate_limited", "message": "...", "fields": {...}, ...extra}}

The OpenAI-compatible endpoint renders the same error in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``). Inference errors
(inference/errors.py) are mapped here too so adapters catch one family.
"""

from __future__ import annotations

from typing import Any

from inference.errors import InferenceError


class PlatformError(Exception):
    code = "error"
    status = 400
    message = "The request failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message or self.message)
        self.fields = fields or {}
        self.headers = headers or {}
        self.extra = extra

    @property
    def text(self) -> str:
        return str(self)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.text}
        if self.fields:
            body["fields"] = self.fields
        body.update(self.extra)
        return {"error": body}


class ValidationFailed(PlatformError):
    code = "invalid_request"
    status = 400
    message = "The request is invalid."


class PayloadTooLarge(ValidationFailed):
    code = "payload_too_large"
    status = 413
    message = "The request is too large."


class UnprocessableRequest(ValidationFailed):
    code = "unprocessable"
    status = 422
    message = "The request is well-formed but cannot be processed."


class AuthenticationRequired(PlatformError):
    code = "authentication_required"
    status = 401
    message = "Authentication is required."


class PermissionDenied(PlatformError):
    code = "permission_denied"
    status = 403
    message = "You may not do this."


class NotFound(PlatformError):
    code = "not_found"
    status = 404
    message = "Not found."


class RateLimited(PlatformError):
    code = "rate_limited"
    status = 429
    message = "Too many requests; slow down."


class ServiceUnavailable(PlatformError):
    code = "service_unavailable"
    status = 503
    message = "The service is unavailable right now."


def from_inference(exc: InferenceError) -> PlatformError:
    """An inference failure as a platform error (same code, the HTTP status the layer chose)."""
    err = PlatformError(str(exc))
    err.code = exc.code
    err.status = exc.http_status
    return err


class Busy(PlatformError):
    """A second message on a websocket while an answer is still streaming."""

    code = "busy"
    status = 409
    message = "An answer is still being generated; wait for it or press stop."


class ContextLengthExceeded(ValidationFailed):
    code = "context_length_exceeded"
    status = 400
    message = "The message is too long for the model's context window."


class InternalError(PlatformError):
    code = "internal_error"
    status = 500
    message = "Something went wrong on our side."


class MethodNotAllowed(PlatformError):
    code = "method_not_allowed"
    status = 405
    message = "This method is not allowed here."
