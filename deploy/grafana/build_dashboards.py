#!/usr/bin/env python3
"""Writes the provisioned Grafana dashboards (deploy/grafana/dashboards/*.json).

The JSON files are what Grafana loads; this script is where they are edited:

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if they are stale

Every query names metrics that the platform (monitoring/metrics.py,
django-prometheus, the default process collector), vLLM, Triton or the Redis /
Elasticsearch exporters export; tests/deploy/test_metric_names.py checks it.
Stdlib only, so it runs anywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}  # the provisioned datasource (provisioning/datasources)
RI = "$__rate_interval"


def q(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def queries(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [q(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(title: str, targets: list[dict[str, Any]], unit: str = "short", *, desc: str = "") -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }


def jaeger_links(min_duration: str) -> list[dict[str, Any]]:
    """Panel links into Jaeger's search for the dashboard's time range (``${__from}`` is in ms, Jaeger wants µs).

    ``$jaeger_ui`` is the address a browser reaches Jaeger's UI at (a dashboard variable:
    compose publishes it on 127.0.0.1:16686, Kubernetes through a port-forward or an ingress).
    """
    search = "${jaeger_ui}/search?service=${trace_service}&lookback=custom&start=${__from}000&end=${__to}000&limit=50"
    return [
        {
            "title": f"Traces slower than {min_duration} (Jaeger)",
            "url": f"{search}&minDuration={min_duration}",
            "targetBlank": True,
        },
        {
            "title": "Traces with errors (Jaeger)",
            "url": f"{search}&tags=%7B%22error%22%3A%22true%22%7D",
            "targetBlank": True,
        },
    ]


def with_links(panel: dict[str, Any], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {**panel, "links": links}


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    *,
    desc: str = "",
    thresholds: list[tuple[float | None, str]] | None = None,
) -> dict[str, Any]:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [q(expr)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"},
    }


def heatmap(title: str, expr: str, *, desc: str = "") -> dict[str, Any]:
    return {
        "type": "heatmap",
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": [{**q(expr, "{{le}}"), "format": "heatmap"}],
        "options": {"calculate": False, "yAxis": {"unit": "short"}, "cellGap": 1},
        "fieldConfig": {"defaults": {}, "overrides": []},
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantiles(metric: str, by: str, label: str, qs: tuple[float, ...] = (0.5, 0.95)) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({x}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket[{RI}])))",
            f"p{round(x * 100)} {label}",
        )
        for x in qs
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right: stats 6 wide, graphs 12 wide, rows full width."""
    x = y = 0
    row_h = 0
    out = []
    for pid, panel in enumerate(panels, start=1):
        w, h = {"row": (24, 1), "stat": (6, 4)}.get(panel["type"], (12, 8))
        if x + w > 24 or panel["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        out.append({**panel, "id": pid, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x += w
        row_h = max(row_h, h)
        if panel["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return out


# Dashboard variables of the Jaeger links (editable on the dashboard; the defaults fit compose).
TRACE_VARIABLES = [
    {
        "type": "textbox",
        "name": "jaeger_ui",
        "label": "Jaeger UI",
        "query": "http://127.0.0.1:16686",
        "current": {"text": "http://127.0.0.1:16686", "value": "http://127.0.0.1:16686"},
        "hide": 0,
    },
    {
        "type": "textbox",
        "name": "trace_service",
        "label": "Traced service (OTEL_SERVICE_NAME)",
        "query": "vacant-house-chat",
        "current": {"text": "vacant-house-chat", "value": "vacant-house-chat"},
        "hide": 0,
    },
]


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    *,
    tags: list[str],
    time_from: str = "now-6h",
    variables: list[dict[str, Any]] | None = None,
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["vacant-house-chat", *tags],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["vacant-house-chat"], "title": "Platform dashboards", "asDropdown": True}
        ],
        "panels": layout(panels),
    }


# --- dashboards ------------------------------------------------------------------
STREAM_5XX = '(sum(rate(chat_stream_errors_total{status="5xx"}[5m])) or vector(0))'
WS_ANSWERS = "(sum(rate(chat_websocket_answers_total[5m])) or vector(0))"


def overview() -> dict:
    total = "sum(rate(http_requests_total[5m]))"
    return dashboard(
        "vh-overview",
        "Chatbot platform: overview",
        [
            stat("Requests (24 h)", "sum(increase(http_requests_total[24h]))", "short"),
            stat(
                "Mean latency (5 m)",
                "sum(rate(request_duration_seconds_sum[5m])) / sum(rate(request_duration_seconds_count[5m]))",
                "s",
                thresholds=[(None, "green"), (1, "yellow"), (3, "red")],
            ),
            stat(
                "Error rate (5xx and failed streams, 5 m)",
                f'((sum(rate(http_requests_total{{status=~"5.."}}[5m])) or vector(0)) + {STREAM_5XX}) / ({total} + {WS_ANSWERS})',
                "percentunit",
                thresholds=[(None, "green"), (0.005, "yellow"), (0.01, "red")],
                desc="As the HighErrorRate alert counts it: 5xx responses, plus answers that failed inside a stream "
                "already sent as 200 (SSE error events, websocket error frames), over requests plus websocket answers.",
            ),
            stat(
                "Active users (open chat websockets)",
                "sum(chat_websocket_connections)",
                "short",
                desc="Open chat websocket connections over all API replicas: one per open chat tab.",
            ),
            row("Traffic"),
            timeseries(
                "Requests/s by status class",
                queries((f"sum by (status) (rate(http_requests_total[{RI}]))", "{{status}}")),
                "reqps",
            ),
            with_links(
                timeseries(
                    "Latency (to the last byte)",
                    queries(*quantiles("request_duration_seconds", "", "", (0.5, 0.95, 0.99))),
                    "s",
                    desc="Streamed chat answers are timed to their last token. The panel's links open "
                    "Jaeger on this time range: which step of which request was slow (docs/operations.md, Tracing).",
                ),
                jaeger_links("3s"),
            ),
            timeseries(
                "Requests/s by endpoint",
                queries((f"sum by (endpoint) (rate(http_requests_total[{RI}]))", "{{endpoint}}")),
                "reqps",
            ),
            with_links(
                timeseries(
                    "p95 latency by endpoint",
                    queries(*quantiles("request_duration_seconds", "endpoint", "{{endpoint}}", (0.95,))),
                    "s",
                ),
                jaeger_links("3s"),
            ),
            row("Chat"),
            timeseries(
                "Chat answers/s by outcome",
                queries((f"sum by (status) (rate(chat_responses_total[{RI}]))", "{{status}}")),
                "ops",
            ),
            timeseries(
                "Chat errors/s by code",
                queries((f"sum by (code) (rate(chat_errors_total[{RI}]))", "{{code}}")),
                "ops",
            ),
            timeseries(
                "Failed streams/s by channel (after a 200 or on a websocket)",
                queries((f"sum by (channel, status) (rate(chat_stream_errors_total[{RI}]))", "{{channel}} {{status}}")),
                "ops",
                desc="Counted as 2xx by http_requests_total; the error rate above and HighErrorRate add the 5xx ones.",
            ),
            timeseries(
                "Open chat websockets",
                queries(
                    ("sum(chat_websocket_connections)", "open"),
                    ("sum by (instance) (chat_websocket_connections)", "{{instance}}"),
                ),
            ),
            timeseries(
                "Rate-limit rejections/s by scope",
                queries((f"sum by (scope) (rate(ratelimit_rejections_total[{RI}]))", "{{scope}}")),
                "ops",
            ),
            row("Targets"),
            timeseries("Scrape targets up", queries(("sum by (job) (up)", "{{job}}"))),
            timeseries(
                "Django responses/s by status code",
                queries((f"sum by (status) (rate(django_http_responses_total_by_status_total[{RI}]))", "{{status}}")),
                "reqps",
            ),
        ],
        tags=["overview"],
        time_from="now-24h",
        variables=TRACE_VARIABLES,
    )


def inference() -> dict:
    return dashboard(
        "vh-inference",
        "Chatbot platform: inference performance",
        [
            row("Throughput"),
            timeseries(
                "Generated tokens/s",
                queries(
                    (f"sum by (endpoint) (rate(inference_generated_tokens_total[{RI}]))", "platform {{endpoint}}"),
                    (f"sum by (instance) (rate(vllm:generation_tokens_total[{RI}]))", "vLLM {{instance}}"),
                ),
                "short",
                desc="Platform: tokens the API received; vLLM: tokens the engine generated (all clients).",
            ),
            timeseries(
                "Prompt tokens/s",
                queries(
                    (f"sum by (endpoint) (rate(inference_prompt_tokens_total[{RI}]))", "platform {{endpoint}}"),
                    (f"sum by (instance) (rate(vllm:prompt_tokens_total[{RI}]))", "vLLM {{instance}}"),
                ),
            ),
            timeseries(
                "Decode speed per answer (tokens/s)",
                queries(*quantiles("inference_tokens_per_second", "endpoint", "{{endpoint}}")),
            ),
            timeseries(
                "Upstream calls/s by outcome",
                queries(
                    (
                        f"sum by (endpoint, kind, outcome) (rate(inference_requests_total[{RI}]))",
                        "{{endpoint}} {{kind}} {{outcome}}",
                    )
                ),
                "ops",
            ),
            row("Latency"),
            timeseries(
                "Time to first token (TTFT)",
                queries(
                    *quantiles("inference_time_to_first_token_seconds", "", "platform"),
                    *quantiles("vllm:time_to_first_token_seconds", "", "vLLM"),
                ),
                "s",
                desc="Platform: measured by the API including network and queueing; vLLM: inside the engine.",
            ),
            timeseries(
                "Time per output token (TPOT)",
                queries(
                    *quantiles("inference_time_per_output_token_seconds", "", "platform"),
                    *quantiles("vllm:time_per_output_token_seconds", "", "vLLM"),
                ),
                "s",
            ),
            timeseries(
                "vLLM end-to-end request latency",
                queries(*quantiles("vllm:e2e_request_latency_seconds", "", "")),
                "s",
            ),
            timeseries(
                "Triton mean request / queue time",
                queries(
                    (
                        f"sum by (model) (rate(nv_inference_request_duration_us[{RI}])) "
                        f"/ sum by (model) (rate(nv_inference_request_success[{RI}])) / 1e6",
                        "request {{model}}",
                    ),
                    (
                        f"sum by (model) (rate(nv_inference_queue_duration_us[{RI}])) "
                        f"/ sum by (model) (rate(nv_inference_request_success[{RI}])) / 1e6",
                        "queue {{model}}",
                    ),
                ),
                "s",
            ),
            row("Batching and queues"),
            timeseries(
                "vLLM batch: running and waiting requests",
                queries(
                    ("sum by (instance) (vllm:num_requests_running)", "running {{instance}}"),
                    ("sum by (instance) (vllm:num_requests_waiting)", "waiting {{instance}}"),
                ),
                desc="Running requests = the continuous batch being decoded.",
            ),
            heatmap(
                "vLLM tokens per engine step (batch size distribution)",
                f"sum by (le) (increase(vllm:iteration_tokens_total_bucket[{RI}]))",
            ),
            timeseries(
                "Triton mean dynamic batch size",
                queries(
                    (
                        f"sum by (model) (rate(nv_inference_count[{RI}])) / sum by (model) (rate(nv_inference_exec_count[{RI}]))",
                        "{{model}}",
                    )
                ),
                desc="Inferences / executions: how many requests the dynamic batcher merged per model run.",
            ),
            heatmap(
                "Embedding batch size (texts per call)",
                f"sum by (le) (increase(embedding_batch_size_bucket[{RI}]))",
            ),
            timeseries(
                "Platform inference queue",
                queries(
                    ("sum by (endpoint) (inference_queue_depth)", "waiting {{endpoint}}"),
                    *quantiles("inference_queue_wait_seconds", "endpoint", "wait {{endpoint}}", (0.95,)),
                ),
            ),
            timeseries(
                "Endpoint health",
                queries(
                    ("max by (endpoint, kind) (inference_endpoint_up)", "up {{endpoint}} {{kind}}"),
                    ("max by (endpoint) (inference_breaker_state)", "breaker {{endpoint}} (0 closed, 2 open)"),
                ),
            ),
        ],
        tags=["inference"],
    )


def resources() -> dict:
    return dashboard(
        "vh-resources",
        "Chatbot platform: resource utilisation",
        [
            row("GPU"),
            timeseries(
                "GPU utilisation per device",
                queries(("nv_gpu_utilization", "{{instance}} {{gpu_uuid}}")),
                "percentunit",
            ),
            timeseries(
                "GPU memory used per device",
                queries(
                    ("nv_gpu_memory_used_bytes", "used {{gpu_uuid}}"),
                    ("nv_gpu_memory_total_bytes", "total {{gpu_uuid}}"),
                ),
                "bytes",
            ),
            timeseries(
                "GPU memory use ratio",
                queries(("nv_gpu_memory_used_bytes / nv_gpu_memory_total_bytes", "{{instance}} {{gpu_uuid}}")),
                "percentunit",
            ),
            timeseries("GPU power", queries(("nv_gpu_power_usage", "{{gpu_uuid}}")), "watt"),
            timeseries(
                "vLLM KV cache usage",
                queries(("vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc", "{{instance}} {{model_name}}")),
                "percentunit",
                desc="kv_cache_usage_perc on current vLLM, gpu_cache_usage_perc on older releases.",
            ),
            timeseries(
                "vLLM preemptions/s",
                queries((f"sum by (instance) (rate(vllm:num_preemptions_total[{RI}]))", "{{instance}}")),
                "ops",
                desc="Requests evicted from the batch when the KV cache is full.",
            ),
            row("API processes"),
            timeseries(
                "API CPU (cores)",
                queries(
                    (
                        f"sum by (instance) (rate(api_worker_cpu_seconds_total[{RI}])) "
                        f'or sum by (instance) (rate(process_cpu_seconds_total{{job="api"}}[{RI}]))',
                        "{{instance}}",
                    )
                ),
                desc="Gunicorn workers sample their CPU into api_worker_*; single-process servers export process_*.",
            ),
            timeseries(
                "API resident memory",
                queries(
                    (
                        "sum by (instance) (api_worker_resident_memory_bytes) "
                        'or sum by (instance) (process_resident_memory_bytes{job="api"})',
                        "{{instance}}",
                    )
                ),
                "bytes",
            ),
            timeseries(
                "Database query latency",
                queries(*quantiles("django_db_query_duration_seconds", "", "")),
                "s",
            ),
            timeseries(
                "Database connections opened/s and errors/s",
                queries(
                    (f"sum(rate(django_db_new_connections_total[{RI}]))", "opened"),
                    (f"sum(rate(django_db_new_connection_errors_total[{RI}]))", "connect errors"),
                    (f"sum(rate(django_db_errors_total[{RI}]))", "query errors"),
                ),
                "ops",
            ),
            row("Triton host and search JVM"),
            timeseries(
                "Triton host CPU and memory",
                queries(
                    ("nv_cpu_utilization", "CPU {{instance}}"),
                    ("nv_cpu_memory_used_bytes / nv_cpu_memory_total_bytes", "memory {{instance}}"),
                ),
                "percentunit",
            ),
            timeseries(
                "Elasticsearch JVM heap",
                queries(
                    (
                        'sum by (name) (elasticsearch_jvm_memory_used_bytes{area="heap"}) '
                        '/ sum by (name) (elasticsearch_jvm_memory_max_bytes{area="heap"})',
                        "{{name}}",
                    )
                ),
                "percentunit",
            ),
            row("Network"),
            timeseries(
                "API request / response bytes/s",
                queries(
                    (f"sum(rate(django_http_requests_body_total_bytes_sum[{RI}]))", "in (request bodies)"),
                    (f"sum(rate(django_http_responses_body_total_bytes_sum[{RI}]))", "out (response bodies)"),
                ),
                "Bps",
                desc="Non-streamed bodies only: SSE streams are not sized by django-prometheus.",
            ),
            timeseries(
                "Redis and Elasticsearch network bytes/s",
                queries(
                    (f"sum(rate(redis_net_input_bytes_total[{RI}]))", "Redis in"),
                    (f"sum(rate(redis_net_output_bytes_total[{RI}]))", "Redis out"),
                    (f"sum(rate(elasticsearch_transport_rx_size_bytes_total[{RI}]))", "ES transport in"),
                    (f"sum(rate(elasticsearch_transport_tx_size_bytes_total[{RI}]))", "ES transport out"),
                ),
                "Bps",
            ),
        ],
        tags=["resources"],
    )


def cache_search() -> dict:
    lookups = f'sum(rate(response_cache_requests_total{{result=~"hit|miss"}}[{RI}]))'
    return dashboard(
        "vh-cache-search",
        "Chatbot platform: cache and search",
        [
            row("Response cache"),
            stat(
                "Response cache hit rate (1 h)",
                'sum(rate(response_cache_requests_total{result="hit"}[1h])) '
                '/ sum(rate(response_cache_requests_total{result=~"hit|miss"}[1h]))',
                "percentunit",
                thresholds=[(None, "red"), (0.5, "yellow"), (0.7, "green")],
            ),
            stat("Redis up", "min(redis_up)", "short", thresholds=[(None, "red"), (1, "green")]),
            stat(
                "Elasticsearch cluster green",
                'max(elasticsearch_cluster_health_status{color="green"})',
                "short",
                thresholds=[(None, "red"), (1, "green")],
            ),
            stat("Indexed documents", "max(sum by (cluster) (elasticsearch_indices_docs))", "short"),
            timeseries(
                "Response cache lookups/s",
                queries((f"sum by (result) (rate(response_cache_requests_total[{RI}]))", "{{result}}")),
                "ops",
            ),
            timeseries(
                "Response cache hit rate",
                queries((f'sum(rate(response_cache_requests_total{{result="hit"}}[{RI}])) / {lookups}', "hit rate")),
                "percentunit",
            ),
            timeseries(
                "Response cache and rate limiter latency",
                queries(
                    *quantiles("response_cache_duration_seconds", "", "cache lookup", (0.95,)),
                    *quantiles("ratelimit_check_duration_seconds", "", "rate-limit check", (0.95,)),
                ),
                "s",
            ),
            timeseries(
                "Django cache hit rate",
                queries(
                    (f"sum(rate(django_cache_get_hits_total[{RI}])) / sum(rate(django_cache_get_total[{RI}]))", "hits"),
                ),
                "percentunit",
            ),
            row("Redis"),
            timeseries(
                "Redis memory",
                queries(
                    ("sum by (instance) (redis_memory_used_bytes)", "used {{instance}}"),
                    ("sum by (instance) (redis_memory_max_bytes)", "maxmemory {{instance}}"),
                ),
                "bytes",
            ),
            timeseries(
                "Redis commands/s and clients",
                queries(
                    (f"sum by (instance) (rate(redis_commands_processed_total[{RI}]))", "commands/s {{instance}}"),
                    ("sum by (instance) (redis_connected_clients)", "clients {{instance}}"),
                ),
            ),
            timeseries(
                "Redis keyspace hit rate and evictions",
                queries(
                    (
                        f"sum(rate(redis_keyspace_hits_total[{RI}])) / (sum(rate(redis_keyspace_hits_total[{RI}])) "
                        f"+ sum(rate(redis_keyspace_misses_total[{RI}])))",
                        "hit rate",
                    ),
                    (f"sum(rate(redis_evicted_keys_total[{RI}]))", "evicted keys/s"),
                ),
            ),
            timeseries(
                "Redis mean command latency",
                queries(
                    (
                        f"sum by (cmd) (rate(redis_commands_duration_seconds_total[{RI}])) "
                        f"/ sum by (cmd) (rate(redis_commands_total[{RI}]))",
                        "{{cmd}}",
                    )
                ),
                "s",
            ),
            row("Elasticsearch and retrieval"),
            timeseries(
                "Elasticsearch mean query latency",
                queries(
                    (
                        f"sum(rate(elasticsearch_indices_search_query_time_seconds[{RI}])) "
                        f"/ sum(rate(elasticsearch_indices_search_query_total[{RI}]))",
                        "query",
                    ),
                    (
                        f"sum(rate(elasticsearch_indices_search_fetch_time_seconds[{RI}])) "
                        f"/ sum(rate(elasticsearch_indices_search_fetch_total[{RI}]))",
                        "fetch",
                    ),
                ),
                "s",
            ),
            timeseries(
                "Elasticsearch queries/s and indexing rate",
                queries(
                    (f"sum(rate(elasticsearch_indices_search_query_total[{RI}]))", "queries/s"),
                    (f"sum(rate(elasticsearch_indices_indexing_index_total[{RI}]))", "documents indexed/s"),
                    (f"sum(rate(knowledge_chunks_indexed_total[{RI}]))", "chunks written by the platform/s"),
                ),
                "ops",
            ),
            timeseries(
                "Elasticsearch mean indexing latency",
                queries(
                    (
                        f"sum(rate(elasticsearch_indices_indexing_index_time_seconds_total[{RI}])) "
                        f"/ sum(rate(elasticsearch_indices_indexing_index_total[{RI}]))",
                        "per document",
                    )
                ),
                "s",
            ),
            timeseries(
                "Retrieval latency by stage (platform)",
                queries(*quantiles("retrieval_duration_seconds", "stage, backend", "{{stage}} {{backend}}", (0.95,))),
                "s",
            ),
            timeseries(
                "Partial searches: some shards did not answer (made again: whole, or served partial)",
                queries(
                    (
                        f"sum by (search, after_retry) (rate(knowledge_search_partial_total[{RI}]))",
                        "{{search}} {{after_retry}}",
                    )
                ),
                "ops",
            ),
        ],
        tags=["cache", "search"],
    )


DASHBOARDS = {
    "overview.json": overview,
    "inference.json": inference,
    "resources.json": resources,
    "cache-search.json": cache_search,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [n for n, text in rendered.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        if stale:
            print(
                f"stale dashboards: {', '.join(stale)}; run python deploy/grafana/build_dashboards.py", file=sys.stderr
            )
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
