"""The overview dashboard's latency panels lead to Jaeger's traces of the same time range."""

from __future__ import annotations

import json

import pytest

from tests.deploy.metric_names import DASHBOARDS

pytestmark = pytest.mark.fast


def test_the_latency_panels_link_to_jaeger_for_their_time_range() -> None:
    board = json.loads((DASHBOARDS / "overview.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["jaeger_ui"]["query"].startswith("http") and variables["trace_service"]["query"]
    panels = {p["title"]: p for p in board["panels"]}
    for title in ("Latency (to the last byte)", "p95 latency by endpoint"):
        urls = [link["url"] for link in panels[title]["links"]]
        slow = next(u for u in urls if "minDuration=" in u)
        assert slow.startswith("${jaeger_ui}/search?service=${trace_service}")
        # Grafana's range is in ms, Jaeger's search in µs.
        assert "start=${__from}000" in slow and "end=${__to}000" in slow
        assert any("error" in u for u in urls)
