"""Choosing endpoints for one request: balancing, affinity, retries, failover, breakers.

Order of candidates (``order_candidates``):
1. usable endpoints (breaker not open, last health check not failed) before the others,
   which stay as a last resort;
2. lower ``priority`` first (a higher value is a standby tier);
3. with an ``affinity_key``: weighted rendezvous hashing, so one conversation keeps
   hitting the same endpoint (its prefix cache) while the set of endpoints is stable,
   and only the keys of a removed endpoint move;
   without: least outstanding requests per unit of weight, ties broken by a
   weighted random draw.

``RoutePlan`` walks that order for successive attempts. Attempt n goes to the n-th
candidate (wrapping around), skipping an endpoint whose breaker refuses or whose
queue is full. Retries (backoff between attempts) only happen for retryable
errors and, for streams, only before the first token (the caller stops calling
``next`` once text was delivered). The whole request is bounded by the first
candidate's total timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from django.conf import settings

from inference.errors import InferenceError, NoHealthyEndpoint, QueueFull, UpstreamTimeout
from inference.registry import EndpointRuntime
from monitoring import metrics

T = TypeVar("T")
_rng = random.Random()


def _rendezvous_score(key: str, endpoint: str, weight: int) -> float:
    digest = hashlib.blake2b(f"{key}\x00{endpoint}".encode(), digest_size=8).digest()
    # Uniform in (0, 1); weighted rendezvous: -w / ln(u) (larger wins).
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 2)
    return -weight / math.log(u)


def order_candidates(
    runtimes: Sequence[EndpointRuntime], *, affinity_key: str | None = None, rng: random.Random | None = None
) -> list[EndpointRuntime]:
    rng = rng or _rng

    def key(rt: EndpointRuntime) -> tuple:
        if affinity_key is not None:
            spread = -_rendezvous_score(affinity_key, rt.name, rt.config.weight)
            return (not rt.usable(), rt.config.priority, spread)
        load = rt.outstanding / rt.config.weight
        # Efraimidis-Spirakis: u ** (1 / w) sorts a weighted random permutation.
        draw = -(rng.random() ** (1.0 / rt.config.weight))
        return (not rt.usable(), rt.config.priority, load, draw)

    return sorted(runtimes, key=key)


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of inference_requests_total for a failure."""
    if isinstance(exc, InferenceError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "internal_error"


class RoutePlan:
    def __init__(
        self,
        runtimes: Sequence[EndpointRuntime],
        *,
        kind: str,
        affinity_key: str | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.kind = kind
        self.order = order_candidates(runtimes, affinity_key=affinity_key)
        self.max_attempts = max(1, max_attempts or settings.INFERENCE_MAX_ATTEMPTS)
        self.attempts = 0
        self.last_error: InferenceError | None = None
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        self.deadline = self.started + (self.order[0].config.total_timeout_s if self.order else 0.0)

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def next(self) -> EndpointRuntime:
        """The endpoint for the next attempt, its breaker taken; sleeps the backoff before a retry.

        Raises the last error when attempts or time run out, QueueFull when every
        endpoint's queue is full, NoHealthyEndpoint when every breaker is open.
        """
        if not self.order:
            raise NoHealthyEndpoint(f"no enabled {self.kind} endpoint")
        if self.attempts >= self.max_attempts:
            raise self._exhausted()
        if self.attempts > 0:
            delay = min(
                settings.INFERENCE_RETRY_BACKOFF_MAX_S,
                settings.INFERENCE_RETRY_BACKOFF_S * 2 ** (self.attempts - 1),
            ) * random.uniform(0.5, 1.0)
            if delay >= self.remaining():
                raise self._exhausted()
            await asyncio.sleep(delay)
        start = self.attempts % len(self.order)
        self.attempts += 1
        full = open_breakers = 0
        for rt in self.order[start:] + self.order[:start]:
            if not rt.limiter.has_room():
                full += 1
                continue
            if not rt.breaker.acquire():
                open_breakers += 1
                continue
            if self.attempts > 1:
                metrics.INFERENCE_RETRIES.labels(rt.name, self.kind).inc()
            return rt
        if full and not open_breakers and self.last_error is None:
            names = ", ".join(rt.name for rt in self.order)
            raise QueueFull(f"every {self.kind} endpoint is at its queue limit ({names})")
        if self.last_error is not None:
            raise self.last_error
        raise NoHealthyEndpoint(f"every {self.kind} endpoint is unavailable (circuit open or busy)")

    def _exhausted(self) -> InferenceError:
        if self.last_error is not None:
            return self.last_error
        return UpstreamTimeout(f"no {self.kind} endpoint answered in time")

    def failed(self, rt: EndpointRuntime, exc: InferenceError) -> None:
        """Record a failed attempt on ``rt``'s breaker and remember the error."""
        status = getattr(exc, "upstream_status", None)
        if not exc.retryable:
            # The endpoint answered (e.g. 400): it is alive; the request is at fault.
            rt.breaker.record_success()
        elif status == 429:
            rt.breaker.release()  # busy, not broken
        else:
            rt.breaker.record_failure()
        metrics.child(metrics.INFERENCE_REQUESTS, rt.name, self.kind, outcome_of(exc)).inc()
        if exc.endpoint is None:
            exc.endpoint = rt.name
        self.last_error = exc

    def succeeded(self, rt: EndpointRuntime) -> None:
        rt.breaker.record_success()
        metrics.child(metrics.INFERENCE_REQUESTS, rt.name, self.kind, "ok").inc()

    def abandoned(self, rt: EndpointRuntime, exc: BaseException | None = None) -> None:
        """No verdict on the endpoint: the caller went away (cancelled, closed the stream) or a bug."""
        rt.breaker.release()
        metrics.child(metrics.INFERENCE_REQUESTS, rt.name, self.kind, outcome_of(exc) if exc else "cancelled").inc()


async def call_with_failover(
    runtimes: Sequence[EndpointRuntime],
    op: Callable[[EndpointRuntime, float], Awaitable[T]],
    *,
    kind: str,
    affinity_key: str | None = None,
    max_attempts: int | None = None,
) -> T:
    """Run ``op(endpoint, deadline)`` on the best endpoint, retrying/failing over on retryable errors.

    ``deadline`` is in event-loop time. Used for every single-shot call (Triton
    inference, non-streaming completions); streams use ``RoutePlan`` directly.
    """
    plan = RoutePlan(runtimes, kind=kind, affinity_key=affinity_key, max_attempts=max_attempts)
    while True:
        rt = await plan.next()
        started = asyncio.get_running_loop().time()
        try:
            async with rt.limiter.slot():
                result = await op(rt, plan.deadline)
        except InferenceError as exc:
            if isinstance(exc, QueueFull):
                rt.breaker.release()
                metrics.INFERENCE_REQUESTS.labels(rt.name, kind, exc.code).inc()
                raise
            plan.failed(rt, exc)
            if not exc.retryable:
                raise
            continue
        except BaseException as exc:
            plan.abandoned(rt, exc)
            raise
        plan.succeeded(rt)
        metrics.child(metrics.INFERENCE_DURATION, rt.name, kind).observe(asyncio.get_running_loop().time() - started)
        return result
