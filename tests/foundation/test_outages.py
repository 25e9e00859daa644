"""monitoring.outages: a dependency outage is a few log lines and one probe per interval, not a line and a timeout per call."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError

from monitoring import outages
from monitoring.outages import DependencyFaultFilter, Outage, RepeatFilter

pytestmark = pytest.mark.fast


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: now[0])
    return now


def test_it_logs_an_outage_once_then_a_count_per_interval_then_its_end(clock, caplog):
    state = Outage("thing", retry_s=1.0)
    with caplog.at_level(logging.WARNING, logger="monitoring.outages"):
        for _ in range(500):
            state.failed(ConnectionRefusedError("refused"))
            clock[0] += 0.01
        clock[0] += outages.LOG_EVERY_S
        state.failed(ConnectionRefusedError("refused"))
        state.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("thing unreachable (ConnectionRefusedError: refused)")
    assert "500 failed calls since the last report" in lines[1]  # the first was reported at once
    assert lines[2].startswith("thing reachable again after") and "(501 failed calls)" in lines[2]


def test_during_an_outage_one_caller_per_interval_probes(clock):
    state = Outage("thing", retry_s=2.0)
    assert state.admit(probe_window=5.0)  # no outage: everyone
    state.failed(TimeoutError())
    assert not state.admit(probe_window=5.0)
    clock[0] += 2.0
    assert state.admit(probe_window=5.0)  # the probe
    assert not state.admit(probe_window=5.0)  # the others, while it runs
    state.failed(TimeoutError())
    clock[0] += 1.0
    assert not state.admit(probe_window=5.0)
    clock[0] += 1.0
    assert state.admit(probe_window=5.0)
    state.succeeded()
    assert state.admit(probe_window=5.0) and state.admit(probe_window=5.0) and not state.down()


def test_a_pool_that_was_only_busy_is_not_an_outage(clock):
    state = Outage("db", retry_s=1.0)
    state.succeeded()
    clock[0] += 0.5
    assert not state.no_success_within(3.0)  # someone got a connection while we waited: busy
    clock[0] += 3.0
    assert state.no_success_within(3.0)


def _record(msg: str, *args, level=logging.WARNING, name="some.lib", **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_repeated_warnings_pass_once_per_interval_with_a_count(clock):
    repeats = RepeatFilter()
    assert repeats.filter(_record("retrieval failed: %s", "timeout"))
    assert not repeats.filter(_record("retrieval failed: %s", "refused"))
    assert not repeats.filter(_record("retrieval failed: %s", "refused"))
    # A library that formats its own numbers is the same message.
    assert repeats.filter(_record("Node has failed for 3 times in a row"))
    assert not repeats.filter(_record("Node has failed for 4 times in a row"))
    assert repeats.filter(_record("another message"))
    assert repeats.filter(_record("retrieval failed: %s", "x", level=logging.INFO))  # below WARNING: never held
    clock[0] += outages.LOG_EVERY_S
    again = _record("retrieval failed: %s", "refused")
    assert repeats.filter(again)
    assert again.getMessage() == "retrieval failed: refused [and 2 more like this in the last 30 s]"


def test_django_request_lines_of_dependency_faults_are_dropped_and_bugs_kept():
    faults = DependencyFaultFilter()
    assert not faults.filter(_record("Service Unavailable: %s", "/v1/x", name="django.request", status_code=503))
    assert faults.filter(_record("Internal Server Error: %s", "/v1/x", name="django.request", status_code=500))
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        import sys

        record = _record("Internal Server Error: %s", "/x", name="django.request", status_code=500)
        record.exc_info = sys.exc_info()
    assert not faults.filter(record)
