"""Every metric a dashboard panel or an alert reads is one that something really exports."""

from __future__ import annotations

import importlib.util

import pytest

from tests.deploy.metric_names import (
    REPO,
    alert_expressions,
    dashboard_expressions,
    platform_metric_names,
    promql_metric_names,
    upstream_metric_names,
)

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        (
            'sum by (le) (rate(request_duration_seconds_bucket{endpoint=~"a|b"}[5m]))',
            {"request_duration_seconds_bucket"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, endpoint) (rate(x_bucket[$__rate_interval])))",
            {"x_bucket"},
        ),
        (
            "vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc",
            {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"},
        ),
        ('a / on (instance) group_left (gpu_uuid) b{job="x"} > 0.95', {"a", "b"}),
        ('sum(rate(c_total{status=~"5.."}[5m] offset 1h)) / sum(rate(c_total[5m])) > bool 1e-2', {"c_total"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ],
)
def test_it_finds_the_metric_names_in_promql(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_it_has_dashboards_and_alerts_to_check() -> None:
    assert len(list(dashboard_expressions())) > 40
    assert len(list(alert_expressions())) >= 7


def test_every_dashboard_and_alert_metric_is_exported_by_something() -> None:
    known = upstream_metric_names()
    for names in platform_metric_names().values():
        known |= names
    unknown: dict[str, set[str]] = {}
    for where, expr in [*dashboard_expressions(), *alert_expressions()]:
        missing = promql_metric_names(expr) - known
        if missing:
            unknown[where] = missing
    assert not unknown, (
        "metrics not declared in monitoring/metrics.py, not django-prometheus / process_* / python_*, "
        f"and not in tests/deploy/upstream_metric_names.py: {unknown}"
    )


def test_the_api_side_metrics_the_alerts_use_are_declared_by_the_platform() -> None:
    platform = platform_metric_names()["monitoring/metrics.py"]
    for name in (
        "request_duration_seconds_bucket",
        "http_requests_total",
        "response_cache_requests_total",
        "inference_queue_depth",
        "chat_websocket_connections",
        "api_worker_cpu_seconds_total",
        "api_worker_resident_memory_bytes",
    ):
        assert name in platform, name


def test_the_dashboard_json_is_what_the_builder_writes() -> None:
    spec = importlib.util.spec_from_file_location("build_dashboards", REPO / "deploy/grafana/build_dashboards.py")
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.main(["--check"]) == 0, "run: python deploy/grafana/build_dashboards.py"
