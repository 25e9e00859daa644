"""Typed inference errors: the inference layer's branch of the platform's one error family."""

from __future__ import annotations

from typing import Any

from config.errors import PlatformError

# What a refused request is told (Retry-After) when the model service failed: about one
# breaker probe or pool reconnect away.
RETRY_AFTER_S = 5


class InferenceError(PlatformError):
    code = "inference_error"
    http_status = 502
    message = "The model service failed."
    # Whether another attempt (same or another endpoint) may succeed; only before the first token.
    retryable = False

    def __init__(self, message: str | None = None, *, endpoint: str | None = None, **kwargs: Any) -> None:
        # What callers see is the class's own message; the detail (upstream text, host names,
        # addresses, exception text) is for the log only: str(exc) and ``detail``.
        super().__init__(None, **kwargs)
        self.detail = message or self.message
        self.args = (self.detail,)
        # Which endpoint failed: for logs and metrics, never part of the rendered body.
        self.endpoint = endpoint
        if self.http_status >= 500:
            # The model service is down or busy, not the request wrong: say when to try again.
            self.headers.setdefault("Retry-After", str(RETRY_AFTER_S))


class UpstreamTimeout(InferenceError):
    code = "upstream_timeout"
    http_status = 504
    message = "The model did not answer in time."
    retryable = True


class UpstreamClientError(InferenceError):
    """The upstream refused the request (4xx): retrying will not help."""

    code = "upstream_bad_request"
    http_status = 400
    message = "The model service rejected the request."

    def __init__(self, message: str | None = None, *, upstream_status: int = 400, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.upstream_status = upstream_status


class UpstreamServerError(InferenceError):
    """The upstream failed (5xx, 429, broken connection, malformed answer): worth another attempt."""

    code = "upstream_error"
    http_status = 502
    message = "The model service failed."
    retryable = True

    def __init__(
        self, message: str | None = None, *, upstream_status: int | None = None, endpoint: str | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.upstream_status = upstream_status


class UpstreamConnectionError(UpstreamServerError):
    """The upstream could not be reached (connection refused, DNS, connect timeout)."""

    code = "upstream_unreachable"
    message = "The model service cannot be reached."


class InvalidRequest(InferenceError):
    """The caller's request is malformed (empty messages, negative max_tokens ...): fix it, do not retry."""

    code = "invalid_request"
    http_status = 400
    message = "The request to the model is invalid."


class NoHealthyEndpoint(InferenceError):
    code = "model_unavailable"
    http_status = 503
    message = "No model endpoint is available right now."


class QueueFull(InferenceError):
    code = "model_busy"
    http_status = 503
    message = "The model is busy; try again shortly."


class StreamInterrupted(InferenceError):
    """The stream broke after tokens were sent; ``partial_text`` keeps what arrived."""

    code = "stream_interrupted"
    http_status = 502
    message = "The answer was interrupted."

    def __init__(self, message: str | None = None, *, partial_text: str = "", endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.partial_text = partial_text
