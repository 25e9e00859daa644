"""Circuit breaker and per-endpoint limiter, on their own."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from inference.errors import QueueFull
from inference.limiter import ConcurrencyLimiter

pytestmark = pytest.mark.fast


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_n_consecutive_failures_and_half_opens_after_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_success()  # resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.acquire()
        breaker.record_failure()
    assert breaker.state == OPEN and not breaker.acquire()
    clock.now = 10
    assert breaker.state == HALF_OPEN
    assert breaker.acquire()  # the probe
    assert not breaker.acquire()  # only one probe at a time
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.acquire()


def test_a_failed_probe_opens_it_again():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5
    assert breaker.acquire()
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now = 9
    assert not breaker.acquire()
    clock.now = 10
    assert breaker.acquire()


def test_a_released_probe_lets_the_next_one_through():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    assert breaker.acquire()
    breaker.release()  # cancelled: no verdict
    assert breaker.acquire()


async def test_the_limiter_queues_fifo_and_refuses_when_the_queue_is_full():
    limiter = ConcurrencyLimiter(max_concurrent=1, max_queue=2, queue_timeout_s=5)
    order: list[int] = []
    await limiter.acquire()

    async def waiter(i: int) -> None:
        async with limiter.slot():
            order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert limiter.waiting == 2 and not limiter.has_room()
    started = time.perf_counter()
    with pytest.raises(QueueFull):
        await limiter.acquire()
    assert time.perf_counter() - started < 0.05
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == [1, 2]
    assert limiter.active == 0 and limiter.waiting == 0


async def test_the_limiter_times_out_a_queued_request():
    limiter = ConcurrencyLimiter(max_concurrent=1, max_queue=1, queue_timeout_s=0.05)
    await limiter.acquire()
    with pytest.raises(QueueFull, match="no slot within"):
        await limiter.acquire()
    assert limiter.waiting == 0
    limiter.release()
    assert limiter.active == 0


async def test_a_cancelled_waiter_does_not_leak_a_slot():
    limiter = ConcurrencyLimiter(max_concurrent=1, max_queue=4, queue_timeout_s=5)
    await limiter.acquire()
    task = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    limiter.release()  # hands the slot to the waiter ...
    task.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.active == 0
    await asyncio.wait_for(limiter.acquire(), 1)
