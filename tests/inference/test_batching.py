"""The micro-batcher forms batches like Triton's dynamic batcher."""

from __future__ import annotations

import asyncio

import pytest

from inference.batching import MicroBatcher

pytestmark = pytest.mark.fast


class Recorder:
    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.sent_at: list[float] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.sent_at.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("upstream down")
        return [i * 10 for i in items]


async def test_concurrent_callers_share_batches_and_get_their_own_results():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.02)
    results = await asyncio.gather(*(batcher.submit([i]) for i in range(20)))
    assert results == [[i * 10] for i in range(20)]
    assert [len(b) for b in run.batches] == [8, 8, 4]


async def test_a_lone_caller_is_sent_at_once_when_nothing_is_in_flight():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=64, max_wait_s=5)
    assert await asyncio.wait_for(batcher.submit([1, 2]), 1) == [10, 20]
    assert run.batches == [[1, 2]]


async def test_while_a_batch_is_in_flight_newcomers_wait_at_most_max_wait():
    run = Recorder(delay=0.5)
    batcher = MicroBatcher(run, max_batch_size=64, max_wait_s=0.05)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.01)  # batch [1] is in flight for 0.5 s
    started = loop.time()
    second = asyncio.create_task(batcher.submit([2]))
    third = asyncio.create_task(batcher.submit([3]))
    assert await second == [20] and await third == [30]
    assert run.batches[:2] == [[1], [2, 3]]
    assert 0.04 <= run.sent_at[1] - started < 0.4  # sent after max wait, not after the first batch
    await first


async def test_a_preferred_size_is_sent_without_waiting():
    run = Recorder()
    run.delay = 0.2
    batcher = MicroBatcher(run, max_batch_size=64, max_wait_s=5, preferred_sizes=[4])
    blocker = asyncio.create_task(batcher.submit([0]))  # in flight: the idle shortcut is off
    await asyncio.sleep(0.002)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(batcher.submit([1, 2, 3, 4, 5]), 2) == [10, 20, 30, 40, 50]
    assert run.batches[1] == [1, 2, 3, 4]  # the preferred size went at once ...
    assert run.sent_at[1] - started < 0.05
    assert run.batches[2] == [5]  # ... the rest once the upstream was idle again
    await blocker


async def test_a_failed_call_fails_every_caller_of_the_batch():
    batcher = MicroBatcher(Recorder(fail=True), max_batch_size=8, max_wait_s=0.01)
    results = await asyncio.gather(*(batcher.submit([i]) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_cancelled_caller_is_left_out_of_the_batch():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.05)
    blocker = asyncio.create_task(batcher.submit([0]))  # in flight: newcomers wait
    await asyncio.sleep(0.002)
    doomed = asyncio.create_task(batcher.submit([99]))
    await asyncio.sleep(0.005)
    doomed.cancel()
    assert await batcher.submit([1]) == [10]
    assert run.batches == [[0], [1]]
    await blocker
