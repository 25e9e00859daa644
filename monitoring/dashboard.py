"""Live figures for the admin page (/admin/live/): one cumulative snapshot of the edge metrics.

The snapshot holds raw cumulative counters and histogram buckets, never rates: the page
polls it and derives request rate, error rate, cache hit rate and p95 from the deltas of
consecutive snapshots (the interpolation lives in one place, ``live.js``). Reading the
same counters /metrics exports keeps the page and Grafana in agreement.

Under several worker processes (PROMETHEUS_MULTIPROC_DIR set) the figures are the sum
over this replica's workers, read from their files like /metrics does; each replica of a
multi-replica deployment shows its own traffic (``instance`` names it).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# Sample names (not family names: those differ between prometheus_client versions for counters).
_REQUESTS = "http_requests_total"
_LATENCY_BUCKET = "request_duration_seconds_bucket"
_LATENCY_COUNT = "request_duration_seconds_count"
_LATENCY_SUM = "request_duration_seconds_sum"
_CACHE = "response_cache_requests_total"
_QUEUE = "inference_queue_depth"
_UP = "inference_endpoint_up"
# Failures inside streams that went out as 200 (and websocket answers, which HTTP never sees):
# the error rate counts them, as the HighErrorRate alert does.
_STREAM_ERRORS = "chat_stream_errors_total"
_WS_ANSWERS = "chat_websocket_answers_total"
_MODEL_REQUESTS = "model_requests_total"
_MODEL_TOKENS = "model_tokens_total"
_MODEL_TTFT_BUCKET = "model_time_to_first_token_seconds_bucket"
_WANTED = {
    _REQUESTS,
    _LATENCY_BUCKET,
    _LATENCY_COUNT,
    _LATENCY_SUM,
    _CACHE,
    _QUEUE,
    _UP,
    _MODEL_REQUESTS,
    _MODEL_TOKENS,
    _MODEL_TTFT_BUCKET,
    _STREAM_ERRORS,
    _WS_ANSWERS,
}

# An endpoint's last error can be a long traceback-ish text; the table needs the gist.
_ERROR_CHARS = 300


def _families() -> Iterable[Metric]:
    """This replica's aggregate: every worker's files under multiprocess, else this process."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        return MultiProcessCollector(CollectorRegistry(), path=path).collect()
    return REGISTRY.collect()


def _metric_figures() -> dict[str, Any]:
    by_status: dict[str, float] = {}
    buckets: dict[float, float] = {}
    latency_count = latency_sum = 0.0
    cache = {"hit": 0.0, "miss": 0.0}
    queue: dict[str, float] = {}
    up: dict[str, float] = {}
    streams = {"errors_5xx": 0.0, "websocket_answers": 0.0}
    # Per model group (the label values are group names): cumulative requests, tokens, TTFT buckets.
    models: dict[str, dict[str, Any]] = {}

    def model(name: str) -> dict[str, Any]:
        return models.setdefault(
            name, {"requests": 0.0, "errors": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "ttft": {}}
        )

    for family in _families():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name not in _WANTED:
                continue
            if name == _REQUESTS:
                status = labels.get("status", "other")
                by_status[status] = by_status.get(status, 0.0) + value
            elif name == _LATENCY_BUCKET:
                # Summed over every endpoint and method: the page shows the service-wide p95.
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value
            elif name == _LATENCY_COUNT:
                latency_count += value
            elif name == _LATENCY_SUM:
                latency_sum += value
            elif name == _CACHE:
                result = labels.get("result", "")
                if result in cache:
                    cache[result] += value
            elif name == _QUEUE:
                endpoint = labels.get("endpoint", "")
                queue[endpoint] = queue.get(endpoint, 0.0) + value
            elif name == _UP:
                endpoint = labels.get("endpoint", "")
                up[endpoint] = max(up.get(endpoint, 0.0), value)
            elif name == _STREAM_ERRORS:
                if labels.get("status") == "5xx":
                    streams["errors_5xx"] += value
            elif name == _WS_ANSWERS:
                streams["websocket_answers"] += value
            elif name == _MODEL_REQUESTS:
                m = model(labels.get("model", ""))
                m["requests"] += value
                if labels.get("outcome") == "error":
                    m["errors"] += value
            elif name == _MODEL_TOKENS:
                kind = labels.get("kind", "")
                if kind in ("prompt", "completion"):
                    model(labels.get("model", ""))[f"{kind}_tokens"] += value
            elif name == _MODEL_TTFT_BUCKET:
                ttft = model(labels.get("model", ""))["ttft"]
                le = float(labels["le"])
                ttft[le] = ttft.get(le, 0.0) + value
    for m in models.values():
        m["ttft"] = [[None if math.isinf(le) else le, count] for le, count in sorted(m["ttft"].items())]
    return {
        "requests": {"total": sum(by_status.values()), "by_status": by_status},
        "latency": {
            # JSON has no infinity: the +Inf bucket's bound is null.
            "buckets": [[None if math.isinf(le) else le, count] for le, count in sorted(buckets.items())],
            "count": latency_count,
            "sum": latency_sum,
        },
        "cache": cache,
        "queue_depth": {"total": sum(queue.values()), "by_endpoint": queue},
        "endpoints_up": up,
        "streams": streams,
        "models": models,
    }


# Where the endpoint table comes from: registered by the inference app (monitoring sits below it).
_endpoint_source: Callable[[], Iterable[Any]] = list


def register_endpoint_source(source: Callable[[], Iterable[Any]]) -> None:
    """``source()`` yields rows with name, kind, enabled, healthy, last_latency_ms, last_check_at, last_error."""
    global _endpoint_source
    _endpoint_source = source


def _endpoint_health(up: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for endpoint in _endpoint_source():
        rows.append(
            {
                "name": endpoint.name,
                "kind": endpoint.kind,
                "enabled": endpoint.enabled,
                "healthy": endpoint.healthy,
                # The gauge of this replica's health checks; null when none ran here yet.
                "up": up.get(endpoint.name),
                "last_latency_ms": endpoint.last_latency_ms,
                "last_check_at": endpoint.last_check_at.isoformat() if endpoint.last_check_at else None,
                "last_error": endpoint.last_error[:_ERROR_CHARS],
            }
        )
    return rows


def current_figures() -> dict[str, Any]:
    """One JSON-ready snapshot: cumulative counters, gauges and endpoint health, with its time.

    Counters are cumulative since the workers started (a restart makes them drop; the page
    treats a drop as a gap). Probe and scrape traffic (/healthz, /readyz, /metrics) is not
    in them: the edge middleware never counts it.
    """
    figures = _metric_figures()
    return {
        "timestamp": time.time(),
        "instance": socket.gethostname(),
        "multiprocess": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        **figures,
        "endpoints": _endpoint_health(figures["endpoints_up"]),
    }
