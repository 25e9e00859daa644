"""Tracing with OpenTelemetry: off unless configured, exported over OTLP (docs/operations.md, "Tracing").

The platform's own spans go through this module, so that code never checks whether
tracing is on and costs nothing when it is off (every helper returns at its first line):

    with tracing.span("retrieval.search", **{"retrieval.candidates": n}) as s:  # a child of the current span
        ...
        s.set_attribute("retrieval.lexical_hits", hits)

    @tracing.span("chat.admission")                 # a decorator too (sync or async functions)
    async def admit(...): ...

    with tracing.root_span("chat.answer"):          # a new trace: one websocket answer
        ...

A span that outlives one block, e.g. the generation span of a token stream, is started with
``start_span`` and made current with ``use_span`` only around awaits that belong to it, never
across a ``yield``: an async generator runs in its consumer's context, so a span left current
over a ``yield`` would become the parent of whatever the consumer does meanwhile. ``end_span``
closes it with the outcome. Also: ``add_event``, ``set_attributes``, ``record_error`` (a handled
failure), ``current_trace_id`` / ``current_ids`` (logs, headers, frames), ``start_batch_span``
(work done for several requests at once, linked to each), ``ServerSpans`` (the HTTP server span),
``lifespan`` (flushes at shutdown).

``configure`` (called once per process by the monitoring app) installs the SDK
(``monitoring.tracing_sdk``): the sampler (parent-based ratio; traces that fail or run slower
than ``TRACING_KEEP_SLOW_S`` kept regardless: ``TailKeeper``), the OTLP exporter and the
ecosystem's client instrumentations (aiohttp and httpx, Redis, psycopg; the Elasticsearch
client traces itself). Only the API package is imported when tracing is off. What it costs:
docs/performance.md, "Tracing overhead".
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# The tracer once configure() ran with tracing on; None means off (every helper checks it first).
_tracer: trace.Tracer | None = None
_provider: Any = None
_configure_lock = threading.Lock()
_EMPTY_CONTEXT = otel_context.Context()

# HTTP paths never traced (regular expressions searched in the URL): probes and the
# metrics scrape are polled every few seconds.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"

SAMPLERS = (
    "parentbased_traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "always_on",
    "always_off",
)


def enabled() -> bool:
    return _tracer is not None


# --- spans ------------------------------------------------------------------------------------


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """OTel accepts str, bool, int, float and sequences of them; None means "not known"."""
    return {k: v for k, v in attributes.items() if v is not None}


def _close(span: Span, exc: BaseException | None) -> None:
    """Record how the span's work ended, then end it.

    A cancelled task or closed generator (a stopped answer, a client gone) is not an error;
    a platform error below 500 (a refusal: rate limit, validation) is an event, not a failure.
    """
    if exc is not None and span.is_recording():
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            span.set_attribute("cancelled", True)
        elif getattr(exc, "http_status", 500) < 500:
            span.add_event("refused", {"code": str(getattr(exc, "code", type(exc).__name__))})
        else:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
    span.end()


class _SpanScope:
    """``span()`` / ``root_span()``: a context manager, or a decorator of a sync or async function."""

    __slots__ = ("_attributes", "_kind", "_links", "_name", "_new_trace", "_span", "_token")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, Any],
        *,
        new_trace: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] = (),
    ) -> None:
        self._name = name
        self._attributes = attributes
        self._new_trace = new_trace
        self._kind = kind
        self._links = links
        self._span: Span | None = None
        self._token: object | None = None

    def __enter__(self) -> Span:
        tracer = _tracer
        if tracer is None:
            return INVALID_SPAN
        current = trace.get_current_span()
        if not self._new_trace and _dropped(current):
            return current  # the sampler would drop this child too: skip the work (most requests)
        root = self._new_trace or not current.get_span_context().is_valid
        span = tracer.start_span(
            self._name,
            context=_EMPTY_CONTEXT if self._new_trace else None,
            kind=self._kind,
            attributes=_clean(self._attributes),
            links=self._links,
        )
        self._span = span
        ctx = trace.set_span_in_context(span)
        self._token = otel_context.attach(_suppress_if_unsampled(span, ctx) if root else ctx)
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        otel_context.detach(self._token)  # type: ignore[arg-type]
        self._token = None
        _close(span, exc)

    def __call__(self, fn: F) -> F:
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            # A span current across a yield would leak into the consumer: use start_span/use_span.
            raise TypeError(f"@span cannot decorate the generator {fn.__qualname__}; use start_span/use_span")
        name, attributes, new_trace, kind = self._name, self._attributes, self._new_trace, self._kind
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _tracer is None or (not new_trace and _dropped(trace.get_current_span())):
                    return await fn(*args, **kwargs)
                with _SpanScope(name, attributes, new_trace=new_trace, kind=kind):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None or (not new_trace and _dropped(trace.get_current_span())):
                return fn(*args, **kwargs)
            with _SpanScope(name, attributes, new_trace=new_trace, kind=kind):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def _dropped(current: Span) -> bool:
    """Whether ``current`` is a span the sampler dropped (valid, local, not recording).

    Its children are dropped too (parent-based sampling), so the helpers skip making them:
    with 10 % sampling that is most spans of most requests.
    """
    if current.is_recording():
        return False
    ctx = current.get_span_context()
    return ctx.is_valid and not ctx.is_remote


def span(name: str, /, **attributes: Any) -> _SpanScope:
    """A child span of the current one for a block (or a decorated function)."""
    return _SpanScope(name, attributes)


def client_span(name: str, /, **attributes: Any) -> _SpanScope:
    """``span`` for a call to another service that its instrumentation does not trace (a client span)."""
    return _SpanScope(name, attributes, kind=SpanKind.CLIENT)


def root_span(name: str, /, *, links: Sequence[Link] = (), **attributes: Any) -> _SpanScope:
    """A span that starts a new trace whatever is current (one websocket answer, one job)."""
    return _SpanScope(name, attributes, new_trace=True, links=links)


def start_span(name: str, /, *, links: Sequence[Link] = (), parent: Span | None = None, **attributes: Any) -> Span:
    """A child span of the current one (or of ``parent``) that is NOT made current; end it with ``end_span``."""
    tracer = _tracer
    if tracer is None or _dropped(parent if parent is not None else trace.get_current_span()):
        return INVALID_SPAN
    ctx = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=ctx, attributes=_clean(attributes), links=links)


def end_span(span: Span | None, exc: BaseException | None = None, **attributes: Any) -> None:
    """End a span from ``start_span``: set the final attributes and record how it ended (None: nothing)."""
    if span is None or span is INVALID_SPAN:
        return
    if attributes and span.is_recording():
        span.set_attributes(_clean(attributes))
    _close(span, exc)


class _Use:
    __slots__ = ("_span", "_token")

    def __init__(self, span: Span | None) -> None:
        self._span = span if span is not None else INVALID_SPAN
        self._token: object | None = None

    def __enter__(self) -> Span:
        if self._span is not INVALID_SPAN:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def use_span(span: Span | None) -> _Use:
    """Make ``span`` current for a block that does not ``yield`` (it is not ended here; None: nothing)."""
    return _Use(span)


def add_event(name: str, /, **attributes: Any) -> None:
    if _tracer is not None:
        trace.get_current_span().add_event(name, _clean(attributes))


def record_error(exc: BaseException) -> None:
    """Mark the current span failed with ``exc`` (for failures that are handled, not raised)."""
    if _tracer is not None:
        current = trace.get_current_span()
        if current.is_recording():
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))


def set_attributes(**attributes: Any) -> None:
    if _tracer is not None:
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attributes(_clean(attributes))


def current_span() -> Span:
    """The current span (a non-recording one when there is none or tracing is off)."""
    return trace.get_current_span() if _tracer is not None else INVALID_SPAN


def current_span_context() -> SpanContext | None:
    """The current span's context (to link to it from elsewhere), or None."""
    if _tracer is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (what Jaeger searches for), or None."""
    ctx = current_span_context()
    return format(ctx.trace_id, "032x") if ctx is not None else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex for log lines, or None."""
    ctx = current_span_context()
    return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) if ctx is not None else None


def start_batch_span(name: str, /, callers: Iterable[Span], **attributes: Any) -> Span:
    """The span of work done for several callers at once (a micro-batch).

    Its parent is the first sampled caller (else the first recording one), so the work shows
    inside that request's trace; it links to every other caller's span (Jaeger: FOLLOWS_FROM
    references), so each request it served leads to it. ``batch.requests`` counts them all.
    Not made current: use ``use_span`` around its awaits, then ``end_span``.
    """
    if _tracer is None:
        return INVALID_SPAN
    seen: set[tuple[int, int]] = set()
    traced: list[Span] = []
    for caller in callers:
        ctx = caller.get_span_context()
        if (
            ctx.is_valid
            and (ctx.trace_id, ctx.span_id) not in seen
            and (ctx.trace_flags.sampled or caller.is_recording())
        ):
            seen.add((ctx.trace_id, ctx.span_id))
            traced.append(caller)
    if not traced:
        return INVALID_SPAN  # no caller is traced: neither is the batch
    parent = next((c for c in traced if c.get_span_context().trace_flags.sampled), traced[0])
    # A link to the parent too would make Jaeger show the batch as FOLLOWS_FROM it, not CHILD_OF.
    links = [Link(c.get_span_context()) for c in traced if c is not parent]
    return start_span(name, links=links, parent=parent, **{"batch.requests": len(traced), **attributes})


def name_server_span(method: str, route: str) -> None:
    """Name the request's server span after its route (the ASGI span knows only the raw path)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording() and getattr(current, "kind", None) == SpanKind.SERVER:
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)


# --- ASGI ---------------------------------------------------------------------------------------


def wrap_asgi_http(app: Any) -> Any:
    """The HTTP app wrapped in ``ServerSpans`` when tracing is on (else ``app`` itself)."""
    return ServerSpans(app) if _tracer is not None else app


class ServerSpans:
    """One server span per HTTP request, from the first byte in to the last byte out.

    What OpenTelemetry's ASGI middleware does, at the cost production can afford: that
    middleware collects every attribute and wraps every ASGI message of every request, sampled
    or not (on the /v1/ benchmark about 0.1 ms per request, ~5 us more per streamed chunk). Here
    an incoming ``traceparent`` is continued, the sampler decides first, and only a recorded
    span gets the attributes (the ASGI instrumentation's own ``collect_request_attributes``,
    so the same semantic conventions) and a ``send`` wrapper that reads the status. A request
    that is not sampled runs with the client instrumentations suppressed (see
    ``_suppress_if_unsampled``). Not used for websockets: a socket lives for many answers, and
    each answer is a trace of its own (``root_span``). The span is renamed after the Django
    route by ``name_server_span``; the raw path may hold ids.
    """

    def __init__(self, app: Any) -> None:
        from opentelemetry import propagate
        from opentelemetry.instrumentation.asgi import asgi_getter, collect_request_attributes, set_status_code

        self.app = app
        self._extract = propagate.extract
        self._getter = asgi_getter
        self._attributes = collect_request_attributes
        self._set_status = set_status_code
        self._excluded = re.compile("|".join(EXCLUDED_URLS.split(",")))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http" or self._excluded.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        parent = None
        for name, _value in scope["headers"]:
            if name == b"traceparent":  # continue the caller's trace (W3C trace context)
                parent = self._extract(scope, getter=self._getter)
                break
        span = tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        ctx = trace.set_span_in_context(span, parent)
        if span.is_recording():
            if span.get_span_context().trace_flags.sampled:
                span.set_attributes(self._attributes(scope))
            else:  # recorded only in case it fails or runs slow: the essentials, cheaply
                span.set_attribute("url.path", scope["path"])
            send = self._status_recorder(span, send)
        token = otel_context.attach(_suppress_if_unsampled(span, ctx))
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            _close(span, exc)
            raise
        else:
            span.end()
        finally:
            otel_context.detach(token)

    def _status_recorder(self, span: Span, send: Any) -> Any:
        async def status_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self._set_status(span, message["status"])  # ERROR for 5xx, as the ASGI instrumentation does
            await send(message)

        return status_send


def _suppress_if_unsampled(span: Span, ctx: otel_context.Context) -> otel_context.Context:
    """The context of a trace's local root; the client instrumentations are off in it unless sampled.

    Redis, psycopg, aiohttp and httpx spans cost about as much again as the platform's own
    spans; in a trace that will not be exported (most of them) they are pure cost. A trace that
    is recorded but not sampled (kept only if it fails or runs slow) still records the
    platform's own spans: which step failed or was slow, without the client calls under it.
    """
    sampled = span.get_span_context().trace_flags.sampled
    if sampled and not otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY, ctx):
        return ctx
    # Set either way: a new trace started inside an unsampled one must not inherit its "off".
    return otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, not sampled, ctx)


async def lifespan(scope: Mapping[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
    """The ASGI lifespan protocol: at shutdown, export the spans still queued.

    Uvicorn re-raises the SIGTERM it caught once the server has stopped, so the process
    ends without running ``atexit`` (where the SDK would flush): the last second of spans,
    the ends of the last answers, would be lost at every restart without this.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _provider is not None:
                await asyncio.to_thread(flush)
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What settings decide (config/settings.py, "Tracing"); the SDK reads the other OTEL_* itself."""

    enabled: bool
    service_name: str = "vacant-house-chat"
    protocol: str = "http/protobuf"  # or "grpc"
    sampler: str = "parentbased_traceidratio"
    ratio: float = 0.1
    keep_errors: bool = True
    keep_slow_s: float = 10.0

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> TracingConfig:
        cfg = cls(**values)
        if cfg.sampler not in SAMPLERS:
            raise ValueError(f"OTEL_TRACES_SAMPLER={cfg.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if not 0.0 <= cfg.ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={cfg.ratio}: a ratio between 0 and 1")
        if cfg.protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={cfg.protocol!r}: use http/protobuf or grpc")
        return cfg

    @property
    def keeps(self) -> bool:
        """Whether traces the ratio left out are recorded, to keep the failed and slow ones."""
        return self.sampler.startswith("parentbased_") and (self.keep_errors or self.keep_slow_s > 0)


def configure(cfg: TracingConfig, *, exporter: Any = None) -> bool:
    """Install the SDK, the exporter and the instrumentations (once per process); True when on.

    ``exporter`` replaces the OTLP exporter (the tests' in-memory one). The SDK is imported
    here only: with tracing off, only the API package is loaded.
    """
    global _tracer, _provider
    if not cfg.enabled:
        return False
    with _configure_lock:
        if _tracer is not None:
            return True
        from monitoring import tracing_sdk

        _provider = tracing_sdk.install(cfg, exporter=exporter)
        _tracer = _provider.get_tracer("vacant-house-chat")
    kept = [
        *(["errors"] if cfg.keep_errors else []),
        *([f"traces over {cfg.keep_slow_s:g} s"] if cfg.keep_slow_s else []),
    ]
    log.info(
        "tracing on: service %s, sampler %s (ratio %s), also keeping %s, OTLP over %s",
        cfg.service_name,
        cfg.sampler,
        cfg.ratio,
        " and ".join(kept) if cfg.keeps and kept else "nothing else",
        cfg.protocol,
    )
    return True


def flush(timeout_s: float = 5.0) -> bool:
    """Export what is queued now (a worker exiting, a test about to read Jaeger)."""
    return _provider.force_flush(int(timeout_s * 1000)) if _provider is not None else True
