"""Typed inference errors. The chat layer renders each as a clear message (``code`` is stable)."""

from __future__ import annotations


class InferenceError(Exception):
    code = "inference_error"
    http_status = 502
    message = "The model service failed."

    def __init__(self, message: str | None = None, *, endpoint: str | None = None) -> None:
        super().__init__(message or self.message)
        self.endpoint = endpoint


class UpstreamTimeout(InferenceError):
    code = "upstream_timeout"
    http_status = 504
    message = "The model did not answer in time."


class UpstreamClientError(InferenceError):
    """The upstream refused the request (4xx): retrying will not help."""

    code = "upstream_bad_request"
    http_status = 400
    message = "The model service rejected the request."

    def __init__(self, message: str | None = None, *, status: int = 400, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.status = status


class UpstreamServerError(InferenceError):
    code = "upstream_error"
    http_status = 502
    message = "The model service failed."


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
