"""What this process knows about its dependencies being down, and one log line per outage interval.

A dependency that stops answering fails every call that touches it: logging each failure
(with its traceback) buried the logs during a Redis outage (7,073 tracebacks in 66 s, issue
#20). Every caller on the request path reports failures here instead:

- ``failed(exc)``: counted in ``dependency_failures_total{dependency}``; the first failure of an
  outage is logged at once (WARNING, no traceback), later ones once per ``LOG_EVERY_S`` as a
  count ("still unreachable: 412 failed calls in the last 30 s").
- ``succeeded()``: ends the outage (logged once, with its length and count).
- ``usable()``: False for ``retry_s`` after a failure, so callers skip a dead server instead of
  paying a connect timeout per call (a circuit breaker with one probe per interval).

Thread-safe: the synchronous cache backend reports from worker threads, the async clients
from the event loop. No I/O here; the bottom layer (monitoring) so every layer may use it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from monitoring.metrics import DEPENDENCY_FAILURES

log = logging.getLogger("monitoring.outages")

# At most one "still unreachable" line per dependency per this many seconds.
LOG_EVERY_S = 30.0
_DIGITS = re.compile(r"\d+")


class Outage:
    """The failure state of one dependency in this process."""

    def __init__(self, name: str, *, retry_s: Callable[[], float] | float = 2.0) -> None:
        self.name = name
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._down_until = 0.0  # callers skip the dependency until then
        self._last_failure = 0.0
        self._last_success = 0.0
        self._logged_at = 0.0
        self._unlogged = 0  # failures since the last line
        self._total = 0  # failures of the current outage

    def retry_s(self) -> float:
        return self._retry_s() if callable(self._retry_s) else self._retry_s

    def usable(self) -> bool:
        """False while a recent failure says to leave the dependency alone (one probe per ``retry_s``)."""
        return time.monotonic() >= self._down_until

    def admit(self, *, probe_window: float) -> bool:
        """May the caller try the dependency now? During an outage, one caller per interval.

        Outside an outage: always yes. During one: no until ``retry_s`` after the last failure;
        then the first caller gets through as the probe, and the others are refused for
        ``probe_window`` seconds (how long the probe may take) unless it reports back sooner.
        """
        now = time.monotonic()
        if self._down_since is None and now >= self._down_until:
            return True
        with self._lock:
            if now < self._down_until:
                return False
            if self._down_since is not None:
                self._down_until = now + probe_window
            return True

    def release_probe(self) -> None:
        """The probe ended without a verdict (e.g. the pool was only busy): let the next caller try."""
        if self._down_since is not None:
            with self._lock:
                self._down_until = min(self._down_until, time.monotonic() + self.retry_s())

    def no_success_within(self, seconds: float) -> bool:
        """No call succeeded in the last ``seconds`` (so a timeout means down, not busy)."""
        return time.monotonic() - self._last_success >= seconds

    def down(self) -> bool:
        """An outage is in progress (failed since the last success)."""
        return self._down_since is not None

    def failed_within(self, seconds: float) -> bool:
        """The dependency failed in the last ``seconds`` (an error now is probably this outage)."""
        return bool(self._last_failure) and time.monotonic() - self._last_failure < seconds

    def failed(self, exc: BaseException | str, *, skip_for: float | None = None) -> None:
        """Record a failed call; the dependency is skipped for ``skip_for`` (default ``retry_s``) seconds."""
        now = time.monotonic()
        DEPENDENCY_FAILURES.labels(self.name).inc()
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._last_failure = now
            self._down_until = now + (self.retry_s() if skip_for is None else skip_for)
            self._total += 1
            self._unlogged += 1
            if self._down_since is None:
                self._down_since = now
                first = True
            else:
                first = False
            due = first or now - self._logged_at >= LOG_EVERY_S
            if due:
                count, self._unlogged, self._logged_at = self._unlogged, 0, now
                since = now - self._down_since
        if not due:
            return
        if first:
            log.warning("%s unreachable (%s); degrading until it answers again", self.name, detail[:300])
        else:
            log.warning(
                "%s still unreachable after %.0f s: %d failed calls since the last report (last: %s)",
                self.name,
                since,
                count,
                detail[:300],
            )

    def succeeded(self) -> None:
        """A call worked: the outage, if any, is over."""
        self._last_success = time.monotonic()
        if self._down_since is None and not self._down_until:
            return
        with self._lock:
            since, total = self._down_since, self._total
            self._down_since, self._down_until, self._total, self._unlogged = None, 0.0, 0, 0
        if since is not None:
            log.warning("%s reachable again after %.1f s (%d failed calls)", self.name, time.monotonic() - since, total)

    def reset(self) -> None:
        """Forget the state (tests)."""
        with self._lock:
            self._down_since, self._down_until, self._last_failure = None, 0.0, 0.0
            self._total = self._unlogged = 0


_outages: dict[str, Outage] = {}


def outage(name: str, *, retry_s: Callable[[], float] | float = 2.0) -> Outage:
    """The process-wide state of ``name`` (created on first use; later ``retry_s`` are ignored)."""
    state = _outages.get(name)
    if state is None:
        state = _outages.setdefault(name, Outage(name, retry_s=retry_s))
    return state


def all_outages() -> list[Outage]:
    return list(_outages.values())


def is_unreachable_error(exc: BaseException | None) -> bool:
    """The exception says a dependency did not answer (database, Redis), rather than a bug."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


class DependencyFaultFilter(logging.Filter):
    """Drops Django's per-request lines about dependency faults (``django.request``).

    Django logs every 5xx response at ERROR, with the traceback when an exception caused it.
    For an unreachable dependency, and for the platform's own deliberate refusals (502/503/504
    with ``Retry-After``: model unavailable, database down, /readyz saying "not ready"), that is
    one line per request for as long as the outage lasts. The outage is logged once per
    interval where it is seen; each request is in the access log with its status and request
    id. A 500 (a bug) and its traceback still go through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            return not is_unreachable_error(exc)
        return getattr(record, "status_code", None) not in (502, 503, 504)


class RepeatFilter(logging.Filter):
    """One warning per message template per logger per ``LOG_EVERY_S``, then a count of the rest.

    A dependency that fails every request makes every request warn the same thing ("retrieval
    failed, answering without sources: ..."; psycopg's pool reconnecting). The first line is
    kept at once; the repeats within the interval are counted and the next line that gets
    through says how many were left out. Records with a traceback (a bug) and anything below
    WARNING are never held back.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (last emitted, suppressed since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.exc_info or record.name == log.name:
            return True  # (outage lines are already one per interval, per dependency)
        # Some libraries format their message themselves ("failed for 17 times in a row"): numbers apart, the same.
        key = (record.name, _DIGITS.sub("#", str(record.msg)))
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.get(key, (0.0, 0))
            if last and now - last < LOG_EVERY_S:
                self._seen[key] = (last, suppressed + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # templates are few; a leak would be a bug elsewhere
                self._seen.clear()
        if suppressed:  # (no "%" added: the template is still formatted with the record's args)
            record.msg = f"{record.msg} [and {suppressed} more like this in the last {now - last:.0f} s]"
        return True
