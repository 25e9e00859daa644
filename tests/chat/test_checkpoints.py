"""Checkpoints of streaming answers (chat.checkpoints): one UPDATE per round, never over a finished answer."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async

from chat import checkpoints
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


def _rows() -> tuple[int, int]:
    conversation = Conversation.objects.create(session_key="s" * 32, title="checkpoints")
    streaming = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    )
    finished = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE, content="final"
    )
    return streaming.pk, finished.pk


def _content(pk: int) -> str:
    return Message.objects.get(pk=pk).content


def _state(pk: int) -> tuple[str, dt.datetime | None]:
    row = Message.objects.get(pk=pk)
    return row.content, row.alive_at


async def test_a_round_saves_every_streaming_answer_that_grew_and_never_a_finished_one(settings):
    settings.CHAT_CHECKPOINT_S = 3600  # the background task sleeps; rounds are driven here
    streaming, finished = await database_sync_to_async(_rows)()
    state = database_sync_to_async(_state)
    parts, late = ["일", "이"], ["stale"]
    checkpoints.track(streaming, parts)
    checkpoints.track(finished, late)  # e.g. finished by another process meanwhile
    book = checkpoints.book_for(asyncio.get_running_loop())
    try:
        await checkpoints.save_round(book)
        text, first_sign = await state(streaming)
        assert text == "일이" and first_sign is not None
        assert await state(finished) == ("final", None)  # not overwritten, not marked alive

        await checkpoints.save_round(book)
        text, second_sign = await state(streaming)
        # Nothing grew: the text stays, and the answer is still marked alive (it waits on the model).
        assert text == "일이" and second_sign > first_sign

        parts.append("삼")
        await checkpoints.save_round(book)
        assert (await state(streaming))[0] == "일이삼"

        checkpoints.untrack(streaming)
        parts.append("사")
        await checkpoints.save_round(book)
        assert (await state(streaming))[0] == "일이삼"
    finally:
        checkpoints.untrack(streaming)
        checkpoints.untrack(finished)
        # Its task sleeps the hour set above; the tests share one event loop.
        book.task.cancel()
        book.task = None


async def test_the_background_task_checkpoints_on_its_interval_and_stops_when_nothing_streams(settings):
    settings.CHAT_CHECKPOINT_S = 0.05
    streaming, _ = await database_sync_to_async(_rows)()
    parts = ["a"]
    checkpoints.track(streaming, parts)
    book = checkpoints.book_for(asyncio.get_running_loop())
    try:
        for _ in range(100):
            if await database_sync_to_async(_content)(streaming) == "a":
                break
            await asyncio.sleep(0.05)
        assert await database_sync_to_async(_content)(streaming) == "a"
    finally:
        checkpoints.untrack(streaming)
    for _ in range(100):
        if book.task is None:
            break
        await asyncio.sleep(0.05)
    assert book.task is None


def test_a_zero_interval_tracks_nothing(settings) -> None:
    settings.CHAT_CHECKPOINT_S = 0

    async def go() -> None:
        checkpoints.track(1, ["x"])
        assert checkpoints.book_for(asyncio.get_running_loop()) is None

    asyncio.run(go())
