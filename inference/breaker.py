"""A per-endpoint circuit breaker.

Closed: requests flow; ``failure_threshold`` consecutive failures open it.
Open: requests skip the endpoint until ``cooldown_s`` has passed.
Half-open: exactly one request (the probe) goes through; its success closes the
breaker, its failure opens it again for another cool-down.

Plain state, no locks: it is only touched from the event loop thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        """The state as seen now (an open breaker past its cool-down reads half-open)."""
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return self._state

    def available(self) -> bool:
        """Whether ``acquire`` would let a request through now (does not take the probe)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self._probe_in_flight)

    def acquire(self) -> bool:
        """Ask to send one request. In half-open state only the first asker gets through."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probe_in_flight:
            self._set(HALF_OPEN)
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state != CLOSED:
            self._set(CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        probing = self._probe_in_flight
        self._probe_in_flight = False
        if probing or self._state == HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(OPEN)

    def release(self) -> None:
        """The request ended without a verdict (cancelled, refused by the caller): free the probe."""
        self._probe_in_flight = False

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change:
                self._on_change(state)
