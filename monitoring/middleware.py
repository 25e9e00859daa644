"""Edge metrics: request_duration_seconds and http_requests_total (the names the alert rules use).

Labels are the resolved route name (a small fixed set), never the raw path.
A streaming response is timed to its last byte, so SSE answers count their
whole duration.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from monitoring import tracing
from monitoring.metrics import HTTP_REQUESTS, REQUEST_DURATION, child

# A client can send any token as its method: others are counted as OTHER (one series, not one each).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Probes and the scrape itself would drown the latency figures.
_SKIP = {"healthz", "readyz", "prometheus-django-metrics", "monitoring-live-figures"}


def _endpoint(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or "unnamed"


def record_request(endpoint: str, method: str, status: int, started: float) -> None:
    """One request in request_duration_seconds and http_requests_total (``started``: perf_counter)."""
    if method not in _METHODS:
        method = "OTHER"
    child(REQUEST_DURATION, endpoint, method).observe(time.perf_counter() - started)
    child(HTTP_REQUESTS, endpoint, f"{status // 100}xx").inc()


def _wrap_async(body: AsyncIterator[Any], done: Callable[[], None]) -> AsyncIterator[Any]:
    async def gen() -> AsyncIterator[Any]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            done()

    return gen()


def _wrap_sync(body: Iterator[Any], done: Callable[[], None]) -> Iterator[Any]:
    try:
        yield from body
    finally:
        done()


class RequestMetricsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        return self._finish(request, self.get_response(request), started)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        return self._finish(request, await self.get_response(request), started)

    def _finish(self, request: HttpRequest, response: HttpResponseBase, started: float) -> HttpResponseBase:
        endpoint = _endpoint(request)
        if endpoint in _SKIP:
            return response
        method = request.method or "GET"
        match = getattr(request, "resolver_match", None)
        # The request's trace span is named after the URL pattern (low cardinality), as its metrics are.
        tracing.name_server_span(method, f"/{match.route}" if match is not None else endpoint)

        def done() -> None:
            record_request(endpoint, method, response.status_code, started)

        if isinstance(response, StreamingHttpResponse):
            if response.is_async:
                response.streaming_content = _wrap_async(response.streaming_content, done)  # type: ignore[arg-type]
            else:
                response.streaming_content = _wrap_sync(iter(response.streaming_content), done)
        else:
            done()
        return response


class AllowedHostMiddleware:
    """The API fast path's stand-in for SecurityMiddleware + CommonMiddleware (config/asgi.py).

    Async-native, so no thread hop: validates the Host header against ALLOWED_HOSTS
    (``get_host`` raises DisallowedHost, answered 400 by Django) and sets the
    nosniff header the full chain would set.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.nosniff = settings.SECURE_CONTENT_TYPE_NOSNIFF
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request.get_host()
        response = await self.get_response(request)
        if self.nosniff:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
