"""The platform's /metrics exposes the API-side names the dashboards and alerts read.

Declared families show up in the exposition (``# TYPE`` lines) before they have
samples, so a plain request is enough to prove the names are exported. Which
names only get *samples* after a chat answer is listed in NEEDS_A_CHAT.
"""

from __future__ import annotations

import pytest

from tests.deploy.metric_names import (
    alert_expressions,
    dashboard_expressions,
    platform_metric_names,
    promql_metric_names,
)

# Series that exist only once a chat request has gone through the pipeline
# (cache lookup, generation, websocket). TODO(chat): add a variant of
# test_metrics_exposes_the_api_side_names_the_dashboards_use that sends one chat
# answer first (websocket and /v1/chat/completions, stream on) and then asserts
# that each of these has at least one *sample* (a line without '#').
NEEDS_A_CHAT = frozenset(
    {
        "chat_responses_total",
        "chat_errors_total",
        "chat_websocket_connections",
        "response_cache_requests_total",
        "response_cache_duration_seconds_bucket",
        "inference_requests_total",
        "inference_generated_tokens_total",
        "inference_prompt_tokens_total",
        "inference_time_to_first_token_seconds_bucket",
        "inference_time_per_output_token_seconds_bucket",
        "inference_tokens_per_second_bucket",
        "inference_queue_depth",
        "inference_queue_wait_seconds_bucket",
        "retrieval_duration_seconds_bucket",
        "embedding_batch_size_bucket",
        "ratelimit_check_duration_seconds_bucket",
    }
)

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exposed_names(text: str) -> tuple[set[str], set[str]]:
    """(names with a sample, names a family declares) in a Prometheus text exposition."""
    sampled: set[str] = set()
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            declared.add(name)
            base = name.removesuffix("_total") if kind == "counter" else name
            declared |= {base + suffix for suffix in _SUFFIXES.get(kind, ())}
        elif line and not line.startswith("#"):
            sampled.add(line.split("{", 1)[0].split(" ", 1)[0])
    return sampled, declared | sampled


def api_side_names_in_use() -> set[str]:
    platform = set().union(*platform_metric_names().values())
    used: set[str] = set()
    for _where, expr in [*dashboard_expressions(), *alert_expressions()]:
        used |= promql_metric_names(expr) & platform
    return used


@pytest.mark.services
def test_metrics_exposes_the_api_side_names_the_dashboards_use(client) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    sampled, exposed = exposed_names(response.content.decode())

    # Multiprocess mode (PROMETHEUS_MULTIPROC_DIR) has no process_* collector; the
    # dashboards fall back to api_worker_* there, and the reverse without it.
    optional = {n for n in api_side_names_in_use() if n.startswith(("process_", "api_worker_"))}
    missing = api_side_names_in_use() - optional - exposed
    assert not missing, f"/metrics does not expose {sorted(missing)}"
    assert any(n in exposed for n in optional)

    # A request has been served: the edge metrics already have samples.
    assert "django_http_requests_total_by_method_total" in sampled
