"""Candidate order: least outstanding per weight, weights, priorities, affinity."""

from __future__ import annotations

import collections
import random

import pytest

from inference.registry import EndpointRuntime
from inference.routing import order_candidates
from tests.inference.conftest import generation_config

pytestmark = pytest.mark.fast


def runtimes(*specs: tuple[str, dict]) -> list[EndpointRuntime]:
    return [EndpointRuntime(generation_config(name, "http://127.0.0.1:9/v1", **kw)) for name, kw in specs]


def test_idle_endpoints_share_traffic_by_weight():
    rts = runtimes(("a", {"weight": 300}), ("b", {"weight": 100}))
    rng = random.Random(1)
    firsts = collections.Counter(order_candidates(rts, rng=rng)[0].name for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80


def test_the_least_loaded_endpoint_goes_first():
    a, b = runtimes(("a", {}), ("b", {}))
    a.limiter._active = 3
    assert [rt.name for rt in order_candidates([a, b])] == ["b", "a"]


def test_lower_priority_value_is_preferred_and_broken_endpoints_go_last():
    primary, standby = runtimes(("primary", {"priority": 0}), ("standby", {"priority": 1}))
    primary.limiter._active = 10  # busy, but still preferred over the standby tier
    assert order_candidates([standby, primary])[0].name == "primary"
    for _ in range(5):
        primary.breaker.record_failure()
    assert order_candidates([standby, primary])[0].name == "standby"


def test_affinity_sticks_to_one_endpoint_and_moves_few_keys_when_one_goes():
    rts = runtimes(("a", {}), ("b", {}), ("c", {}))
    keys = [f"conversation-{i}" for i in range(300)]
    chosen = {k: order_candidates(rts, affinity_key=k)[0].name for k in keys}
    assert all(order_candidates(rts, affinity_key=k)[0].name == chosen[k] for k in keys)  # stable
    assert set(chosen.values()) == {"a", "b", "c"}  # spread
    without_c = {k: order_candidates(rts[:2], affinity_key=k)[0].name for k in keys}
    moved = [k for k in keys if chosen[k] != without_c[k]]
    assert all(chosen[k] == "c" for k in moved)  # only c's keys moved
