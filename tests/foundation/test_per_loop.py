"""config.per_loop: one value per running event loop, dropped with its loop."""

from __future__ import annotations

import asyncio
import gc

import pytest

from config.per_loop import LoopTask, PerLoop

pytestmark = pytest.mark.fast


def test_each_loop_gets_its_own_value_made_once_and_a_closed_loop_lets_it_go():
    made: list[object] = []
    values: PerLoop[object] = PerLoop(lambda: made.append(object()) or made[-1])

    async def twice() -> tuple[object, object]:
        return values.get(), values.get()

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert first[0] is first[1] and second[0] is second[1] and first[0] is not second[0]
    assert len(made) == 2
    gc.collect()
    assert len(values) == 0  # both loops are gone, and their values with them


def test_peek_and_pop_never_make_a_value_and_are_none_outside_a_loop():
    values: PerLoop[list[int]] = PerLoop(list)
    assert values.peek() is None and values.pop() is None

    async def run() -> None:
        assert values.peek() is None
        values.get().append(1)
        loop = asyncio.get_running_loop()
        assert values.peek() == [1] and values.peek(loop) == [1]
        assert values.pop() == [1] and values.peek() is None

    asyncio.run(run())


def test_a_loop_task_is_started_again_only_once_it_has_ended():
    started: list[int] = []

    async def work() -> None:
        started.append(1)
        await asyncio.sleep(0)

    async def run() -> None:
        kept = LoopTask()
        kept.keep(work, "t")
        kept.keep(work, "t")  # still running: not started twice
        first = kept.task
        assert first is not None
        await first
        kept.keep(work, "t")
        assert kept.task is not first
        await kept.task

    asyncio.run(run())
    assert len(started) == 2


def test_a_loop_whose_task_ended_is_let_go_with_its_value():
    tasks: PerLoop[LoopTask] = PerLoop(LoopTask)

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def run() -> None:
        tasks.get().keep(forever, "forever")  # cancelled when asyncio.run ends

    asyncio.run(run())
    gc.collect()
    assert len(tasks) == 0
