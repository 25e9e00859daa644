"""Structured logs: JSON lines, a request id on every record, secrets masked.

Pieces (wired in config/settings.py LOGGING / MIDDLEWARE, see docs/operations.md):

- ``request_id_var``: the current request's id (a contextvar, so it follows the
  request through ``await`` and ``sync_to_async`` threads, and never leaks
  into a neighbour request on the same event loop).
- ``RequestIdMiddleware`` (Django, sync and async): takes a sane incoming
  ``X-Request-ID`` (nginx sets one) or makes one, sets the contextvar, echoes
  the header on the response and writes one access line per request.
- ``RequestIdASGIMiddleware``: the same for websocket connections (Django
  middleware never sees them); it also tags HTTP scopes so both agree.
- ``RequestIdFilter`` adds ``record.request_id`` and, with tracing on, the trace and
  span ids of the current span (``record.trace_id``, ``record.span_id``, ``record.trace``:
  " trace=<id>" for the plain format; monitoring/tracing.py); ``RedactingFilter`` masks
  Authorization values, API keys, ``sk-...`` tokens, passwords and URL
  credentials in the message; ``JsonFormatter`` writes one JSON object per line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

# opentelemetry-api only (no Django): this module stays safe to import from settings.
from monitoring import tracing
from monitoring.key_redaction import PLATFORM_KEY, PLATFORM_KEY_MASK

REQUEST_ID_HEADER = "X-Request-ID"
# The trace of the request (32 hex digits, what Jaeger searches for); only with tracing on.
TRACE_ID_HEADER = "X-Trace-ID"
_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()
_HEADER_META = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
# Accept a caller's id only when it is short and plain: it lands in every log line.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{8,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

access_log = logging.getLogger("monitoring.access")

# Probe and scrape paths are polled every few seconds: their access lines go to DEBUG.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def get_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    # 32 random hex digits, as uuid4().hex was, for a quarter of its cost (no UUID object).
    return secrets.token_hex(16)


def accept_request_id(raw: str | bytes | None) -> str:
    """The caller's id when it is well formed, otherwise a fresh one."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if raw and _VALID_ID.match(raw):
        return raw
    return new_request_id()


# --- redaction -------------------------------------------------------------------
_MASK = "[REDACTED]"


def _mask_authorization(m: re.Match[str]) -> str:
    scheme = f"{m.group(2)} " if m.group(2) else ""
    return f"{m.group(1)}{scheme}{_MASK}"


_REDACTIONS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # Authorization: Bearer xyz / 'authorization': 'Basic xyz' / Authorization=xyz
    (
        re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|basic|token)\s+)?[^\s'\",;]+"),
        _mask_authorization,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {_MASK}"),
    # api_key=..., "x-api-key": "...", password: ..., client_secret=...
    (
        re.compile(
            r"(?i)(\b(?:x-)?api[_-]?key|\bpassword|\bpasswd|\bsecret[_-]?key|\bclient[_-]?secret"
            r"|\baccess[_-]?token|\brefresh[_-]?token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&]+"
        ),
        rf"\1\2{_MASK}",
    ),
    # OpenAI-style secret keys anywhere in the text.
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), f"sk-{_MASK}"),
    # The platform's own keys anywhere in the text (monitoring/key_redaction.py).
    (PLATFORM_KEY, PLATFORM_KEY_MASK),
    # Credentials inside URLs: postgres://vh:secret@host -> postgres://vh:[REDACTED]@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@"), rf"\1{_MASK}@"),
]


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the rendered message (format arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` ("-" outside a request) and the current trace, so every formatter can print them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        if not hasattr(record, "trace_id"):
            ids = tracing.current_ids()
            record.trace_id, record.span_id = ids if ids is not None else (None, None)
            record.trace = f" trace={ids[0]}" if ids is not None else ""
        return True


# --- formatters ------------------------------------------------------------------
# Attributes every LogRecord has; anything else was passed with extra={...}.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName", "trace_id", "span_id", "trace"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, trace_id, span_id, extras, exc.

    ``trace_id``/``span_id`` are null outside a trace (and always with tracing off).
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or "-",
        }
        if hasattr(record, "trace_id"):
            payload["trace_id"], payload["span_id"] = record.trace_id, getattr(record, "span_id", None)
        else:  # formatted without RequestIdFilter
            ids = tracing.current_ids()
            payload["trace_id"], payload["span_id"] = ids if ids is not None else (None, None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["exc"] = redact("".join(traceback.format_exception(*record.exc_info)))
        if record.stack_info:
            payload["stack"] = redact(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """Human-readable lines with the request id (and the trace id in a trace); exception text redacted too."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: str = "%", **kwargs: Any):
        super().__init__(
            fmt or "%(asctime)s %(levelname)s %(name)s [%(request_id)s%(trace)s] %(message)s",
            datefmt,
            style,  # type: ignore[arg-type]
            defaults={"request_id": "-", "trace": ""},
            **kwargs,
        )

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


# --- Django middleware -------------------------------------------------------------
class RequestIdMiddleware:
    """Sets the request id for the request's lifetime and logs one access line.

    Place it first in MIDDLEWARE (after PrometheusBeforeMiddleware) so every
    later middleware's log lines carry the id.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        rid, token, started = request_begin(request)
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            id_headers(response, rid)
            return response
        finally:
            request_end(request, status, started, token)

    async def _acall(self, request: Any) -> Any:
        rid, token, started = request_begin(request)
        status = 500
        try:
            response = await self.get_response(request)
            status = response.status_code
            id_headers(response, rid)
            return response
        finally:
            request_end(request, status, started, token)


def request_begin(request: Any) -> tuple[str, Any, float]:
    """Accept or make the request's id and set it for its lifetime: (id, context token, start time)."""
    # META, not request.headers (a dict of every header, built on first use): once per request.
    rid = accept_request_id(request.META.get(_HEADER_META))
    request.request_id = rid
    return rid, request_id_var.set(rid), time.perf_counter()


def request_end(request: Any, status: int, started: float, token: Any) -> None:
    """The request's one access line; the request id is unset."""
    # For a streamed answer this is the time to the first byte; the stream's
    # full duration is in request_duration_seconds.
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
    access_log.log(
        level,
        "%s %s %s %.1fms",
        request.method,
        request.path,
        status,
        duration_ms,
        extra={"method": request.method, "path": request.path, "status": status, "duration_ms": duration_ms},
    )
    request_id_var.reset(token)


def id_headers(response: Any, rid: str) -> None:
    """X-Request-ID (and X-Trace-ID in a trace) on the response."""
    response[REQUEST_ID_HEADER] = rid
    trace_id = tracing.current_trace_id()
    if trace_id is not None:
        response[TRACE_ID_HEADER] = trace_id


# --- ASGI middleware (websockets) ---------------------------------------------------
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestIdASGIMiddleware:
    """Gives websocket (and HTTP) connections a request id before the app runs.

    The id is put back into the scope's headers, so a Django middleware further
    in finds the same id, and echoed on the response / websocket accept.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != _HEADER_BYTES]
        raw = next((v for k, v in scope.get("headers", []) if k.lower() == _HEADER_BYTES), None)
        rid = accept_request_id(raw)
        scope = dict(scope, headers=[*headers, (_HEADER_BYTES, rid.encode())])
        token = request_id_var.set(rid)

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                out = list(message.get("headers", []))
                if not any(k.lower() == _HEADER_BYTES for k, _ in out):
                    out.append((_HEADER_BYTES, rid.encode()))
                message = dict(message, headers=out)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def logging_config(*, fmt: str = "plain", level: str = "INFO") -> dict[str, Any]:
    """The LOGGING dict for settings: ``LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)``."""
    if fmt not in ("json", "plain"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'plain', not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "monitoring.logging.RequestIdFilter"},
            "redact": {"()": "monitoring.logging.RedactingFilter"},
        },
        "formatters": {
            "json": {"()": "monitoring.logging.JsonFormatter"},
            "plain": {"()": "monitoring.logging.PlainFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["request_id", "redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "elastic_transport": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            # The access line is ours (RequestIdMiddleware); uvicorn's would duplicate it.
            "uvicorn.access": {"level": "WARNING"},
        },
    }
