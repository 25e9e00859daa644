"""The OpenTelemetry SDK side of ``monitoring.tracing``: imported only when tracing is on.

``install`` builds the tracer provider: the sampler, the exporter behind a batch processor
(with ``TailKeeper`` in front when traces left out by the ratio are to be kept when they
fail or run slow), and the ecosystem's instrumentations of the clients on the request path.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

if TYPE_CHECKING:
    from monitoring.tracing import TracingConfig


def install(cfg: TracingConfig, *, exporter: SpanExporter | None = None) -> TracerProvider:
    """Set up and register the global tracer provider, and instrument the clients."""
    batch = BatchSpanProcessor(exporter or otlp_exporter(cfg.protocol))
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES (deployment, pod, version...).
    provider = TracerProvider(sampler=make_sampler(cfg), resource=Resource.create({"service.name": cfg.service_name}))
    provider.add_span_processor(
        TailKeeper(batch, keep_errors=cfg.keep_errors, keep_slow_s=cfg.keep_slow_s) if cfg.keeps else batch
    )
    trace.set_tracer_provider(provider)
    instrument(provider)
    return provider


def otlp_exporter(protocol: str) -> SpanExporter:
    # Both read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def instrument(provider: TracerProvider) -> None:
    """OpenTelemetry's instrumentations of the clients the platform uses.

    Elasticsearch: elasticsearch-py (8.13+) creates its own spans once a tracer provider is
    set; OpenTelemetry's contrib package for it would trace every call twice. Django's own
    instrumentation is not used: its middleware is sync-only (two thread hops per request,
    and the /v1/ fast path must stay async) and ends a streamed answer's span at its first
    byte; the ASGI middleware (``tracing.wrap_asgi_http``) traces every request to its last
    byte, and ``tracing.name_server_span`` names it after the Django route.
    """
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # aiohttp: the LLM client and tritonclient's HTTP client (sessions made after this call).
    AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)  # Elasticsearch's async transport
    RedisInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)


# --- sampling ----------------------------------------------------------------------------------


def make_sampler(cfg: TracingConfig) -> sampling.Sampler:
    """The sampler named by OTEL_TRACES_SAMPLER, with the platform's root rule for the parent-based ones."""
    if cfg.sampler == "always_on":
        return sampling.ALWAYS_ON
    if cfg.sampler == "always_off":
        return sampling.ALWAYS_OFF
    if cfg.sampler == "traceidratio":
        return sampling.TraceIdRatioBased(cfg.ratio)
    ratio = {"parentbased_always_on": 1.0, "parentbased_always_off": 0.0}.get(cfg.sampler, cfg.ratio)
    unsampled: sampling.Sampler = RecordUnderRecording() if cfg.keeps else sampling.ALWAYS_OFF
    return sampling.ParentBased(
        root=RootSampler(ratio, record_unsampled=cfg.keeps),
        remote_parent_not_sampled=unsampled,
        local_parent_not_sampled=unsampled,
    )


class RootSampler(sampling.Sampler):
    """Where a trace starts: a request, an answer, a job; never an orphan client call.

    A database query, Redis command or HTTP call made outside any request or answer (a
    probe, the checkpoint writer, a worker's housekeeping) would otherwise be a one-span
    trace of its own. The rest are sampled by trace-id ratio; those left out are recorded
    (not exported) when the keep rules need to see how they end.
    """

    def __init__(self, ratio: float, *, record_unsampled: bool) -> None:
        self._ratio = sampling.TraceIdRatioBased(ratio)
        self._record = record_unsampled

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> sampling.SamplingResult:
        if kind == SpanKind.CLIENT:
            return sampling.SamplingResult(sampling.Decision.DROP)
        result = self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if self._record and result.decision == sampling.Decision.DROP:
            return sampling.SamplingResult(sampling.Decision.RECORD_ONLY, attributes)
        return result

    def get_description(self) -> str:
        return f"RootSampler{{{self._ratio.get_description()},record_unsampled={self._record}}}"


class RecordUnderRecording(sampling.Sampler):
    """A child of an unsampled span is recorded when its parent is (the trace may still be kept).

    A remote parent that was not sampled (a caller decided) is recorded too, for the same
    reason; a child of a dropped span (an orphan client call) is dropped.
    """

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> sampling.SamplingResult:
        parent = trace.get_current_span(parent_context)
        if parent.is_recording() or parent.get_span_context().is_remote:
            return sampling.SamplingResult(sampling.Decision.RECORD_ONLY, attributes)
        return sampling.SamplingResult(sampling.Decision.DROP)

    def get_description(self) -> str:
        return "RecordUnderRecording"


# --- the tail decision ---------------------------------------------------------------------------


class TailKeeper(SpanProcessor):
    """Keeps the traces the ratio left out when they fail or run slow (a tail decision, in process).

    Sampled spans go straight to the batch processor. Spans of unsampled (record-only)
    traces wait here until their local root span ends (the request's server span, the
    websocket answer, the job); then the whole trace is exported if any of its spans failed
    (status ERROR: a 5xx, a failed generation) or the root lasted at least ``keep_slow_s``,
    and dropped otherwise. Every span of a trace is in this process (the platform is the only
    traced service), so the decision sees the whole trace. Bounded: at most ``MAX_TRACES``
    open traces (the oldest are dropped first) of at most ``MAX_SPANS`` spans each.
    """

    MAX_TRACES = 4096
    MAX_SPANS = 512
    # Spans ending after their root (a shielded settle step) still follow a kept trace.
    RECENTLY_KEPT = 1024

    def __init__(self, batch: SpanProcessor, *, keep_errors: bool, keep_slow_s: float) -> None:
        self._batch = batch
        self._keep_errors = keep_errors
        self._slow_ns = int(keep_slow_s * 1e9) if keep_slow_s > 0 else 0
        self._open: collections.OrderedDict[int, list[ReadableSpan]] = collections.OrderedDict()
        self._kept: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or ctx.trace_flags.sampled:
            self._batch.on_end(span)
            return
        tid = ctx.trace_id
        with self._lock:
            if tid in self._kept:
                self._batch.on_end(as_sampled(span))
                return
            spans = self._open.get(tid)
            if spans is None:
                spans = self._open[tid] = []
                if len(self._open) > self.MAX_TRACES:
                    self._open.popitem(last=False)
            if len(spans) < self.MAX_SPANS:
                spans.append(span)
            if span.parent is not None and not span.parent.is_remote:
                return  # not the local root: wait for it
            del self._open[tid]
            reason = self._reason(span, spans)
            if reason is None:
                return
            self._kept[tid] = None
            if len(self._kept) > self.RECENTLY_KEPT:
                self._kept.popitem(last=False)
        for s in spans:
            self._batch.on_end(as_sampled(s, kept_because=reason if s is span else None))

    def _reason(self, root: ReadableSpan, spans: list[ReadableSpan]) -> str | None:
        if self._keep_errors and any(s.status.status_code == StatusCode.ERROR for s in spans):
            return "error"
        if self._slow_ns and (root.end_time or 0) - (root.start_time or 0) >= self._slow_ns:
            return "slow"
        return None

    def shutdown(self) -> None:
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


def as_sampled(span: ReadableSpan, *, kept_because: str | None = None) -> ReadableSpan:
    """A copy of a finished record-only span flagged sampled, so the batch processor exports it."""
    ctx = span.context
    assert ctx is not None
    attributes = dict(span.attributes or {})
    if kept_because:
        attributes["sampling.kept"] = kept_because
    return ReadableSpan(
        name=span.name,
        context=SpanContext(ctx.trace_id, ctx.span_id, ctx.is_remote, TraceFlags(TraceFlags.SAMPLED), ctx.trace_state),
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
