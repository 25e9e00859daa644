"""The integrators' data plane: ``/v1/`` served without Django's request handler (issue #17).

Django's ASGI handler does, for every request, work a gateway request does not need: a
``sync_to_async`` hop for the ``request_started`` receivers and another for ``response.close()``
(both only tidy database connections; the ``/v1/`` views touch the database only through
``chat.asyncdb``'s threads and ``database_sync_to_async``, which tidy their own), two tasks and
an ``asyncio.wait`` to notice a client that leaves, URL resolution through the resolver tree,
and a middleware chain: about a quarter of a response-cache hit's CPU (docs/performance.md).

This app does what those requests need and nothing else, in one coroutine:

- routes from ``chat/openai_urls.py`` (the one source of the routes and their names), an exact
  lookup for the plain ones, the pattern for those with a converter; anything else (an unknown
  ``/v1/`` path) goes to Django, which answers its usual JSON 404;
- reads the body up to GATEWAY_MAX_BODY_BYTES and answers 413 without reading the rest;
- builds Django's own ``ASGIRequest``, so the views, authentication and validation are the
  ones Django serves (the test client and these views stay one code path);
- the fast path's middleware, inline: the request id and its access line
  (``monitoring.logging``), ``Host`` checked against ALLOWED_HOSTS, nosniff, the request's
  metrics and trace-span name (``monitoring.middleware``), written once when the response ends;
- a client that disconnects cancels the view (a streamed answer stops, an unanswered request
  stops asking the model), as under Django: one waiter on ``receive`` instead of two tasks;
- an exception a view did not handle is answered by ``config.error_views.server_error`` (503
  for an unreachable dependency, else 500, in OpenAI's error shape) and logged as Django would.

Turned off with ``CHAT_API_DATA_PLANE=0`` (then ``config.asgi``'s Django fast path serves ``/v1/``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from io import BytesIO
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponseBase
from django.urls import URLPattern

from chat import openai_urls
from chat.gateway.validation import body_too_large
from chat.openai_api import refused
from config import error_views
from monitoring import tracing
from monitoring.logging import id_headers, request_begin, request_end
from monitoring.middleware import record_request

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
View = Callable[..., Awaitable[HttpResponseBase]]

PREFIX = "/v1/"
# The API's one sync thread (asgiref keeps one executor per context object, for its life): what
# little runs through a thread-sensitive ``sync_to_async`` on this path (``database_sync_to_async``
# loads of the access and budget tables) runs here, not on the one thread Django shares with
# websocket connects and the pages (a hung database there held up every /v1 request, issue #20).
FAST_PATH_SYNC_THREAD = ThreadSensitiveContext()
SyncToAsync.context_to_thread_executor[FAST_PATH_SYNC_THREAD] = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="fast-path-sync"
)
request_log = logging.getLogger("django.request")


class _Route:
    __slots__ = ("kwargs", "name", "route", "view")

    def __init__(self, view: View, name: str, route: str, kwargs: dict[str, Any] | None = None) -> None:
        self.view, self.name, self.route, self.kwargs = view, name, route, kwargs or {}


# Host values (X-Forwarded-Host, Host, server name and port) ALLOWED_HOSTS accepted; forgotten
# when a setting the check reads changes (override_settings in tests; never in production).
_hosts_ok: set[tuple[Any, ...]] = set()


@receiver(setting_changed)
def _forget_hosts(*, setting: str, **_: Any) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG", "USE_X_FORWARDED_HOST"):
        _hosts_ok.clear()


def _check_host(request: ASGIRequest) -> None:
    """``request.get_host()`` (ALLOWED_HOSTS; raises DisallowedHost), remembered for the Host
    values it accepted: Django splits the value and matches it against every pattern on each
    call. A refused value is checked (and logged) every time; at most 64 are kept."""
    meta = request.META
    host = (meta.get("HTTP_X_FORWARDED_HOST"), meta.get("HTTP_HOST"), meta.get("SERVER_NAME"), meta.get("SERVER_PORT"))
    if host in _hosts_ok:
        return
    request.get_host()
    if len(_hosts_ok) < 64:
        _hosts_ok.add(host)


class DataPlane:
    """ASGI app for ``/v1/``; ``fallback`` (Django) serves any path none of its routes match."""

    def __init__(self, fallback: ASGIApp, patterns: list[Any] | None = None) -> None:
        self.fallback = fallback
        self.exact: dict[str, _Route] = {}
        self.patterned: list[URLPattern] = []
        for pattern in openai_urls.urlpatterns if patterns is None else patterns:
            route = str(pattern.pattern)
            if pattern.pattern.converters:
                self.patterned.append(pattern)
            else:
                self.exact[PREFIX + route] = _Route(pattern.callback, pattern.name, PREFIX + route)
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self.nosniff = settings.SECURE_CONTENT_TYPE_NOSNIFF

    def route_for(self, path: str) -> _Route | None:
        route = self.exact.get(path)
        if route is not None or not path.startswith(PREFIX):
            return route
        rest = path[len(PREFIX) :]
        for pattern in self.patterned:
            match = pattern.resolve(rest)
            if match is not None:
                return _Route(pattern.callback, pattern.name, PREFIX + str(pattern.pattern), match.kwargs)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route_for(scope["path"])
        if route is None:
            await self.fallback(scope, receive, send)
            return
        body, too_large = await self._read_body(receive)
        if body is None:
            return  # the client left before sending its request
        SyncToAsync.thread_sensitive_context.set(FAST_PATH_SYNC_THREAD)  # this request's task only
        request = ASGIRequest(scope, BytesIO(body))
        rid, token, started = request_begin(request)
        exchange = _Exchange(asyncio.current_task())
        watcher = asyncio.ensure_future(exchange.watch(receive))
        try:
            response = await self._respond(request, route, too_large)
            exchange.status = response.status_code
            id_headers(response, rid)
            if self.nosniff:
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
            tracing.name_server_span(request.method or "GET", route.route)
            await self._send(response, send, exchange)
        except asyncio.CancelledError:
            if not exchange.client_left:
                raise
            exchange.task.uncancel()  # the client left: the view was stopped, there is nobody to answer
        finally:
            watcher.cancel()
            record_request(route.name, request.method or "GET", exchange.status, started)
            request_end(request, exchange.status, started, token)

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, int | None]:
        """(the body, or None when the client left; the bytes read when over the limit, else None)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    return b"", size  # not read further: the 413 goes out now
                chunks.append(chunk)
            if not message.get("more_body", False):
                return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), None

    async def _respond(self, request: ASGIRequest, route: _Route, too_large: int | None) -> HttpResponseBase:
        try:
            _check_host(request)  # ALLOWED_HOSTS
            if too_large is not None:
                length = request.META.get("CONTENT_LENGTH", "")
                return refused(body_too_large(int(length) if length.isdigit() else None))
            return await route.view(request, **route.kwargs)
        except (
            SuspiciousOperation
        ) as exc:  # a Host not in ALLOWED_HOSTS, a body over Django's limit: 400 as Django answers
            logging.getLogger(f"django.security.{type(exc).__name__}").error(
                str(exc), extra={"status_code": 400, "request": request}
            )
            return error_views.bad_request(request, exc)
        except Exception:
            response = error_views.server_error(request)
            request_log.error(
                "%s: %s",
                "Internal Server Error" if response.status_code == 500 else "Service Unavailable",
                request.path,
                exc_info=True,
                extra={"status_code": response.status_code, "request": request},
            )
            return response

    async def _send(self, response: HttpResponseBase, send: Send, exchange: _Exchange) -> None:
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        if not response.streaming:
            exchange.finishing = True
            await send({"type": "http.response.body", "body": response.content})
            return
        async with aclosing(aiter(response)) as content:  # type: ignore[call-overload]
            async for part in content:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        exchange.finishing = True
        await send({"type": "http.response.body", "body": b""})


class _Exchange:
    """One request's state shared with its disconnect watcher."""

    __slots__ = ("client_left", "finishing", "status", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        assert task is not None
        self.task = task
        # What the access line and metrics say: a request whose client left before any answer
        # is nginx's 499 (not a server error); once a response started, its status.
        self.status = 499
        self.client_left = False
        self.finishing = False  # the last body message is going out: the server reports the end as a disconnect

    async def watch(self, receive: Receive) -> None:
        """Cancel the request when its client disconnects (the view stops; a stream is closed)."""
        message = await receive()
        if message["type"] == "http.disconnect" and not self.finishing:
            self.client_left = True
            self.task.cancel()
