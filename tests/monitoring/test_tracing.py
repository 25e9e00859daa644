"""monitoring.tracing: off by default at no cost; with the SDK, the sampler's rules, the tail keeper, the helpers.

The sampler and the keeper are exercised on a private tracer provider with the SDK's
in-memory exporter; the helpers need the process-wide provider, so they run in a child
process (configuring tracing here would instrument the clients of every later test).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from monitoring import tracing
from monitoring.tracing_sdk import TailKeeper, make_sampler
from tests.live import REPO

pytestmark = pytest.mark.fast


# --- off -------------------------------------------------------------------------------------------


def test_it_is_off_unless_configured_and_then_every_helper_is_a_no_op():
    assert not tracing.enabled()  # no OTEL_EXPORTER_OTLP_ENDPOINT in the test environment
    with tracing.span("x", a=1) as s:
        assert s is INVALID_SPAN
        tracing.add_event("e")
        tracing.set_attributes(b=2)
    assert tracing.current_trace_id() is None and tracing.current_ids() is None

    @tracing.span("decorated")
    async def f(x: int) -> int:
        return x + 1

    assert f.__name__ == "f"
    app = object()
    assert tracing.wrap_asgi_http(app) is app
    assert tracing.start_batch_span("b", [tracing.current_span()]) is INVALID_SPAN
    assert not tracing.configure(tracing.TracingConfig(enabled=False))


def test_it_refuses_to_decorate_a_generator():
    with pytest.raises(TypeError, match="start_span/use_span"):

        @tracing.span("g")
        async def g():
            yield 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER"):
        tracing.TracingConfig.from_settings({"enabled": True, "sampler": "sometimes"})
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        tracing.TracingConfig.from_settings({"enabled": True, "ratio": 2.0})
    cfg = tracing.TracingConfig.from_settings({"enabled": True, "keep_errors": False, "keep_slow_s": 0.0})
    assert not cfg.keeps


# --- sampling and the tail keeper (private provider) --------------------------------------------------


def provider(**cfg) -> tuple[TracerProvider, InMemorySpanExporter]:
    config = tracing.TracingConfig(enabled=True, **cfg)
    exporter = InMemorySpanExporter()
    sink = SimpleSpanProcessor(exporter)
    tp = TracerProvider(sampler=make_sampler(config))
    tp.add_span_processor(
        TailKeeper(sink, keep_errors=config.keep_errors, keep_slow_s=config.keep_slow_s) if config.keeps else sink
    )
    return tp, exporter


def one_trace(tp: TracerProvider, *, fail: bool = False, sleep: float = 0.0) -> int:
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("db", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span("generation") as gen:
            if fail:
                gen.set_status(Status(StatusCode.ERROR, "upstream 500"))
        time.sleep(sleep)
    return root.get_span_context().trace_id


def test_the_ratio_decides_and_kept_traces_are_whole():
    tp, exported = provider(ratio=0.0, keep_errors=True, keep_slow_s=0.2)
    one_trace(tp)
    assert exported.get_finished_spans() == (), "ratio 0: an ordinary trace is not exported"

    failed = one_trace(tp, fail=True)
    spans = exported.get_finished_spans()
    assert {s.name for s in spans} == {"request", "db", "generation"}, "the failed trace is kept whole"
    assert {s.context.trace_id for s in spans} == {failed}
    assert next(s for s in spans if s.name == "request").attributes["sampling.kept"] == "error"
    exported.clear()

    one_trace(tp, sleep=0.25)
    spans = exported.get_finished_spans()
    assert len(spans) == 3 and next(s for s in spans if s.name == "request").attributes["sampling.kept"] == "slow"


def test_without_keep_rules_unsampled_traces_are_not_even_recorded():
    tp, exported = provider(ratio=0.0, keep_errors=False, keep_slow_s=0.0)
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as root:
        assert not root.is_recording()  # the cheap path: nothing recorded for 90 % of requests
    one_trace(tp, fail=True)
    assert exported.get_finished_spans() == ()


def test_sampled_traces_are_exported_and_orphan_client_calls_never_start_one():
    tp, exported = provider(ratio=1.0)
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as orphan:
        assert not orphan.is_recording()
    one_trace(tp)
    assert sorted(s.name for s in exported.get_finished_spans()) == ["db", "generation", "request"]


# --- the helpers with the process-wide provider (child process) -----------------------------------------

PROBE = r"""
import asyncio, json, logging
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from monitoring import tracing
from monitoring.logging import PlainFormatter, RequestIdFilter
from inference.batching import MicroBatcher

exporter = InMemorySpanExporter()
assert tracing.configure(tracing.TracingConfig(enabled=True, sampler="parentbased_always_on"), exporter=exporter)

class Refused(Exception):
    http_status = 429
    code = "rate_limited"

async def main():
    seen = {}

    @tracing.span("decorated", kind="async")
    async def work():
        seen["trace"] = tracing.current_trace_id()
        record = logging.LogRecord("t", logging.INFO, "probe", 1, "hello", None, None)
        RequestIdFilter().filter(record)
        seen["line"] = PlainFormatter().format(record)
        return 1

    with tracing.root_span("answer", channel="websocket") as root:
        await work()
        try:
            with tracing.span("admission"):
                raise Refused()
        except Refused:
            pass
        try:
            with tracing.span("generation"):
                raise RuntimeError("upstream broke")
        except RuntimeError:
            pass
        stream = tracing.start_span("stream")
        with tracing.use_span(stream):
            with tracing.span("http"):
                pass
        tracing.end_span(stream, asyncio.CancelledError(), tokens=3)
    with tracing.root_span("second"):
        pass

    # Two requests whose items share one micro-batch: the batch links both.
    async def run_batch(items):
        with tracing.span("upstream"):
            await asyncio.sleep(0.01)
        return items

    batcher = MicroBatcher(run_batch, max_batch_size=8, max_wait_s=0.05, preferred_sizes=[2])
    async def request(name):
        with tracing.root_span(name):
            with tracing.span("embed"):
                return await batcher.submit([name])
    await asyncio.gather(request("r1"), request("r2"))
    return seen

seen = asyncio.run(main())
tracing.flush()
spans = [
    {
        "name": s.name,
        "trace": format(s.context.trace_id, "032x"),
        "span": format(s.context.span_id, "016x"),
        "parent": format(s.parent.span_id, "016x") if s.parent else None,
        "links": [format(l.context.span_id, "016x") for l in s.links],
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes),
        "events": [e.name for e in s.events],
    }
    for s in exporter.get_finished_spans()
]
print(json.dumps({"seen": seen, "spans": spans}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def by_name(probe: dict) -> dict[str, dict]:
    return {s["name"]: s for s in probe["spans"]}


def test_spans_nest_and_root_spans_start_new_traces(probe):
    spans = by_name(probe)
    answer = spans["answer"]
    assert answer["parent"] is None and answer["attributes"] == {"channel": "websocket"}
    for child in ("decorated", "admission", "generation", "stream"):
        assert spans[child]["parent"] == answer["span"] and spans[child]["trace"] == answer["trace"], child
    assert spans["http"]["parent"] == spans["stream"]["span"], "use_span made the stream current"
    assert spans["second"]["trace"] != answer["trace"] and spans["second"]["parent"] is None
    assert probe["seen"]["trace"] == answer["trace"]


def test_outcomes_errors_refusals_and_cancellations(probe):
    spans = by_name(probe)
    assert spans["generation"]["status"] == "ERROR" and "exception" in spans["generation"]["events"]
    assert spans["admission"]["status"] == "UNSET" and spans["admission"]["events"] == ["refused"]
    assert spans["stream"]["status"] == "UNSET" and spans["stream"]["attributes"] == {"cancelled": True, "tokens": 3}


def test_log_lines_carry_the_trace_id(probe):
    assert f"trace={probe['seen']['trace']}]" in probe["seen"]["line"]


SUPPRESSION_PROBE = r"""
import json
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from monitoring import tracing

# Ratio 0 with the keep rules: every trace recorded, none sampled.
tracing.configure(tracing.TracingConfig(enabled=True, ratio=0.0, keep_errors=True, keep_slow_s=10.0),
                  exporter=InMemorySpanExporter())
seen = {}
with tracing.root_span("answer") as root:
    seen["recording"] = root.is_recording()
    seen["clients_traced"] = is_instrumentation_enabled()
    with tracing.span("step"):
        seen["clients_traced_in_step"] = is_instrumentation_enabled()
seen["clients_traced_after"] = is_instrumentation_enabled()
print(json.dumps(seen))
"""


def test_client_instrumentations_are_off_in_a_trace_that_is_not_sampled():
    done = subprocess.run(
        [sys.executable, "-c", SUPPRESSION_PROBE], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # Recorded (it may still be kept), but Redis/SQL/HTTP client spans are not made for it.
    assert seen == {
        "recording": True,
        "clients_traced": False,
        "clients_traced_in_step": False,
        "clients_traced_after": True,
    }


def test_a_micro_batch_is_linked_to_every_request_it_served(probe):
    spans = by_name(probe)
    batch = spans["inference.batch"]
    embeds = [s for s in probe["spans"] if s["name"] == "embed"]
    assert len(embeds) == 2 and batch["attributes"]["batch.requests"] == 2 and batch["attributes"]["batch.size"] == 2
    parent, other = (embeds[0], embeds[1]) if batch["parent"] == embeds[0]["span"] else (embeds[1], embeds[0])
    assert batch["parent"] == parent["span"] and batch["trace"] == parent["trace"], "inside one request's trace"
    assert batch["links"] == [other["span"]], "and linked to the other request"
    assert spans["upstream"]["parent"] == batch["span"], "the upstream call is the batch's child"
