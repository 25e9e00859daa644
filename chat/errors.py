"""Errors of the chat request path: the chat app's branch of the platform's one error family.

The base class and the request errors every app shares (validation, auth, not found,
rate limited, unavailable...) live in ``config.errors`` and are re-exported here, so chat
code imports its errors from one place; inference and knowledge errors are
``PlatformError`` subclasses too, so every adapter catches one family and renders it
with ``chat.renderers``.
"""

from __future__ import annotations

from config.errors import (
    AuthenticationRequired,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlatformError,
    RateLimited,
    ServiceUnavailable,
    StorageUnavailable,
    UnprocessableRequest,
    ValidationFailed,
)

__all__ = [
    "AuthenticationRequired",
    "BudgetExceeded",
    "Busy",
    "ContextLengthExceeded",
    "InternalError",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PlatformError",
    "RateLimited",
    "ServiceUnavailable",
    "StorageUnavailable",
    "UnprocessableRequest",
    "ValidationFailed",
]


class Busy(PlatformError):
    """A second message on a websocket while an answer is still streaming."""

    code = "busy"
    http_status = 409
    message = "An answer is still being generated; wait for it or press stop."


class ContextLengthExceeded(ValidationFailed):
    code = "context_length_exceeded"
    http_status = 400
    message = "The message is too long for the model's context window."


class ModelNotFound(NotFound):
    """The ``model`` asked for is unknown, disabled, or not one the caller may use (the same answer:
    telling them apart would list the models of other customers)."""

    code = "model_not_found"
    http_status = 404
    message = "The model does not exist or you do not have access to it."


class BudgetExceeded(RateLimited):
    """The caller's monthly token budget is spent (OpenAI: 429 ``insufficient_quota``)."""

    code = "budget_exceeded"
    http_status = 429
    message = "The monthly token budget is spent."
