"""LocalHistogram: observations buffered in memory, then written with one flush.

The reference is prometheus_client's own ``Histogram.observe``: the same values observed
directly into one histogram and through a LocalHistogram into a twin (same buckets)
must expose the same buckets, count and sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from monitoring.metrics import _TOKEN_BUCKETS, LocalHistogram

pytestmark = pytest.mark.fast

BUCKETS = (0.001, 0.01, 0.1, 1.0, 5.0)
# Below the first bound, exactly on every bound, between bounds, above the last finite
# bound (+Inf bucket), negative (first bucket, as Histogram.observe does), and repeats.
VALUES = [
    0.0,
    -0.5,
    0.0005,
    0.001,
    0.0010001,
    0.01,
    0.05,
    0.1,
    0.1,
    0.5,
    1.0,
    1,
    4.999,
    5.0,
    5.0000001,
    7.5,
    1e6,
]

Samples = dict[tuple[str, str | None], float]


def samples(registry: CollectorRegistry, name: str) -> Samples:
    """``{(suffix, le): value}`` of one histogram's series (``_created`` left out: a timestamp)."""
    found: Samples = {}
    for family in registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            suffix = sample.name[len(name) :]
            if suffix != "_created":
                found[(suffix, sample.labels.get("le"))] = sample.value
    return found


def assert_same(registry: CollectorRegistry, direct: str = "direct_seconds", local: str = "local_seconds") -> None:
    expected, got = samples(registry, direct), samples(registry, local)
    assert expected, "the direct histogram exposes samples"
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0] == "_sum":
            # Summed in another order (batched), hence approx; counts are exact.
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        else:
            assert got[key] == value, key


def twins(registry: CollectorRegistry, buckets=BUCKETS) -> tuple[Histogram, Histogram]:
    direct = Histogram("direct_seconds", "Observed one by one.", ["endpoint"], buckets=buckets, registry=registry)
    local = Histogram(
        "local_seconds", "Observed through LocalHistogram.", ["endpoint"], buckets=buckets, registry=registry
    )
    return direct, local


@pytest.mark.parametrize("buckets", [BUCKETS, _TOKEN_BUCKETS], ids=["test-buckets", "token-buckets"])
def test_one_flush_equals_observing_each_value(buckets):
    registry = CollectorRegistry()
    direct, local = twins(registry, buckets)
    buffered = LocalHistogram(local.labels("a"))
    for value in VALUES:
        direct.labels("a").observe(value)
        buffered.observe(value)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == 0  # nothing before the flush
    buffered.flush()
    assert_same(registry)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(VALUES)
    # Spot checks against hand-counted values, not only against the twin.
    if buckets == BUCKETS:
        counts = {
            le: registry.get_sample_value("local_seconds_bucket", {"endpoint": "a", "le": le})
            for le in ("0.001", "0.01", "0.1", "1.0", "5.0", "+Inf")
        }
        # Cumulative: <=0.001: 0, -0.5, 0.0005, 0.001; <=0.01: +0.0010001, 0.01; <=0.1: +0.05, 0.1, 0.1;
        # <=1: +0.5, 1.0, 1; <=5: +4.999, 5.0; +Inf: +5.0000001, 7.5, 1e6.
        assert counts == {"0.001": 4, "0.01": 6, "0.1": 9, "1.0": 12, "5.0": 14, "+Inf": 17}
        assert registry.get_sample_value("local_seconds_sum", {"endpoint": "a"}) == pytest.approx(sum(VALUES))


def test_an_unlabelled_histogram_works_too():
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=BUCKETS, registry=registry)
    local = Histogram("local_seconds", "l", buckets=BUCKETS, registry=registry)
    buffered = LocalHistogram(local)
    for value in VALUES:
        direct.observe(value)
        buffered.observe(value)
    buffered.flush()
    assert_same(registry)


def test_flushing_twice_does_not_count_twice():
    registry = CollectorRegistry()
    direct, local = twins(registry)
    buffered = LocalHistogram(local.labels("a"))
    for value in VALUES:
        direct.labels("a").observe(value)
        buffered.observe(value)
    buffered.flush()
    buffered.flush()
    assert_same(registry)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(VALUES)


def test_a_flush_with_nothing_observed_writes_nothing():
    registry = CollectorRegistry()
    _direct, local = twins(registry)
    LocalHistogram(local.labels("a")).flush()
    labels = {"endpoint": "a"}
    assert registry.get_sample_value("local_seconds_count", labels) == 0
    assert registry.get_sample_value("local_seconds_sum", labels) == 0
    assert registry.get_sample_value("local_seconds_bucket", {**labels, "le": "+Inf"}) == 0


def test_observations_after_a_flush_go_in_with_the_next_flush():
    registry = CollectorRegistry()
    direct, local = twins(registry)
    buffered = LocalHistogram(local.labels("a"))
    first, second = VALUES[:7], VALUES[7:]
    for value in first:
        direct.labels("a").observe(value)
        buffered.observe(value)
    buffered.flush()
    assert_same(registry)
    for value in second:
        direct.labels("a").observe(value)
        buffered.observe(value)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(first)
    buffered.flush()
    assert_same(registry)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(VALUES)
    # The sum is not carried over either: a third flush with one value adds exactly that value.
    before = registry.get_sample_value("local_seconds_sum", {"endpoint": "a"})
    buffered.observe(0.25)
    buffered.flush()
    assert registry.get_sample_value("local_seconds_sum", {"endpoint": "a"}) == pytest.approx(before + 0.25)


def test_children_are_independent():
    registry = CollectorRegistry()
    direct, local = twins(registry)
    a, b = LocalHistogram(local.labels("a")), LocalHistogram(local.labels("b"))
    for value in VALUES:
        direct.labels("a").observe(value)
        a.observe(value)
    b.observe(0.5)
    a.flush()
    b.flush()
    assert samples(registry, "local_seconds")  # sanity
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(VALUES)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "b"}) == 1
    assert registry.get_sample_value("local_seconds_sum", {"endpoint": "b"}) == 0.5


def test_infinity_lands_in_the_inf_bucket():
    registry = CollectorRegistry()
    direct, local = twins(registry)
    buffered = LocalHistogram(local.labels("a"))
    for value in (0.5, math.inf):
        direct.labels("a").observe(value)
        buffered.observe(value)
    buffered.flush()
    assert samples(registry, "local_seconds") == samples(registry, "direct_seconds")
    assert registry.get_sample_value("local_seconds_bucket", {"endpoint": "a", "le": "5.0"}) == 1
    assert registry.get_sample_value("local_seconds_bucket", {"endpoint": "a", "le": "+Inf"}) == 2


def test_a_flush_writes_once_per_used_bucket_plus_the_sum(monkeypatch):
    # The point of the class: a handful of value writes per answer, not two per observation.
    writes: list[float] = []
    original = values.MutexValue.inc

    def counting_inc(self, amount):
        writes.append(amount)
        original(self, amount)

    registry = CollectorRegistry()
    _direct, local = twins(registry)
    child = local.labels("a")
    buffered = LocalHistogram(child)
    for value in [0.0005] * 50 + [0.05] * 30 + [100.0] * 20:
        buffered.observe(value)
    monkeypatch.setattr(values.MutexValue, "inc", counting_inc)
    buffered.flush()
    # The used buckets in bucket order, then the sum.
    assert writes[:-1] == [50, 30, 20]
    assert writes[-1] == pytest.approx(50 * 0.0005 + 30 * 0.05 + 20 * 100.0)


# --- prometheus multiprocess mode (gunicorn) ------------------------------------------------


@pytest.fixture
def multiprocess_values(monkeypatch, tmp_path) -> Iterator[str]:
    """Values created from here on are mmap-backed files in a temporary PROMETHEUS_MULTIPROC_DIR.

    prometheus_client picks its value class when it is imported; Histogram looks
    ``values.ValueClass`` up whenever it creates a child, so swapping that attribute (and
    setting the directory the mmap files go to) gives this test multiprocess values.
    """
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue()
    monkeypatch.setattr(values, "ValueClass", value_class)
    yield str(tmp_path)
    value_class.close_all_files()


def test_multiprocess_mode_gives_the_same_aggregate(multiprocess_values):
    # Not registered anywhere: in multiprocess mode /metrics reads the files, as here.
    direct = Histogram("direct_seconds", "d", ["endpoint"], buckets=BUCKETS, registry=None)
    local = Histogram("local_seconds", "l", ["endpoint"], buckets=BUCKETS, registry=None)
    buffered = LocalHistogram(local.labels("a"))
    assert getattr(buffered._child._sum, "_multiprocess", False), "the values are the mmap-backed ones"
    for value in VALUES:
        direct.labels("a").observe(value)
        buffered.observe(value)
    buffered.flush()
    buffered.flush()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiprocess_values)
    assert_same(registry)
    assert registry.get_sample_value("local_seconds_count", {"endpoint": "a"}) == len(VALUES)
    assert registry.get_sample_value("local_seconds_bucket", {"endpoint": "a", "le": "+Inf"}) == len(VALUES)


def test_observe_with_a_count_is_that_many_observations() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=(0.01, 0.1, 1.0), registry=registry)
    local_h = Histogram("local_seconds", "l", buckets=(0.01, 0.1, 1.0), registry=registry)
    for _ in range(4):
        direct.observe(0.05)
    local = LocalHistogram(local_h)
    local.observe(0.05, 4)
    local.flush()
    for name in ("direct_seconds", "local_seconds"):
        assert registry.get_sample_value(f"{name}_bucket", {"le": "0.1"}) == 4
        assert registry.get_sample_value(f"{name}_bucket", {"le": "0.01"}) == 0
        assert registry.get_sample_value(f"{name}_count") == 4
        assert registry.get_sample_value(f"{name}_sum") == pytest.approx(0.2)
