"""request_duration_seconds / http_requests_total: a client cannot mint label values."""

from __future__ import annotations

import pytest

from monitoring.metrics import REQUEST_DURATION

pytestmark = [pytest.mark.django_db]


def _methods() -> set[str]:
    (metric,) = REQUEST_DURATION.collect()
    return {s.labels["method"] for s in metric.samples if s.name.endswith("_count")}


def test_a_method_nobody_uses_is_counted_as_other(client):
    for i in range(20):
        client.generic(f"BREW{i}", "/api/knowledge/search/")  # any token is a valid HTTP method
    client.get("/api/knowledge/search/")
    methods = _methods()
    assert "OTHER" in methods and "GET" in methods
    assert not any(m.startswith("BREW") for m in methods)
