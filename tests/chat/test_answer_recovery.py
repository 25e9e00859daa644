"""Answers whose final write met a dead database are written when it is back; none stays 'streaming'."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError
from django.utils import timezone

from chat.models import Conversation, Message
from chat.services import answer_recovery
from chat.services.answer_store import Outcome, store_start
from chat.types import Owner
from monitoring.metrics import ANSWER_WRITES_DEFERRED

pytestmark = pytest.mark.django_db(transaction=True)


def _start():
    return store_start(
        owner=Owner(session_key="r" * 32), conversation=None, question="질문", regenerate=False, channel="web",
        collection_ids=[],
    )  # fmt: skip


def _row(pk: int) -> Message:
    return Message.objects.get(pk=pk)


async def _drained() -> None:
    """Until this loop's deferred writes are stored (5 s at most)."""
    for _ in range(100):
        if answer_recovery.pending_count() == 0:
            return
        await asyncio.sleep(0.05)


async def test_a_final_write_that_failed_is_written_when_the_database_answers(monkeypatch):
    monkeypatch.setattr(answer_recovery, "BACKOFF_FIRST_S", 0.05)
    stored = await database_sync_to_async(_start)()
    real = answer_recovery.store_finish
    attempts: list[int] = []

    def flaky(stored_, outcome_):
        attempts.append(1)
        if len(attempts) <= 2:  # the database is down for the first two attempts
            raise OperationalError("server closed the connection unexpectedly")
        return real(stored_, outcome_)

    monkeypatch.setattr(answer_recovery, "store_finish", flaky)
    before = ANSWER_WRITES_DEFERRED._value.get()
    answer_recovery.defer(stored, Outcome(status=Message.Status.COMPLETE, content="빈집 답변"))
    assert answer_recovery.pending_count() == 1
    await _drained()
    row = await database_sync_to_async(_row)(stored.message_id)
    assert (row.status, row.content) == (Message.Status.COMPLETE, "빈집 답변")
    assert len(attempts) == 3 and ANSWER_WRITES_DEFERRED._value.get() == before + 1


def _abandoned() -> tuple[int, int, int]:
    conversation = Conversation.objects.create(session_key="a" * 32, title="abandoned")
    old = timezone.now() - dt.timedelta(hours=2)
    empty = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    partial = Message.objects.create(conversation=conversation, role="assistant", status="streaming", content="반쯤")
    live = Message.objects.create(conversation=conversation, role="assistant", status="streaming", content="생성 중")
    Message.objects.filter(pk__in=[empty.pk, partial.pk]).update(created_at=old)
    return empty.pk, partial.pk, live.pk


def test_answers_a_dead_process_left_streaming_are_marked_interrupted(settings):
    settings.CHAT_CHECKPOINT_S = 0  # no signs of life: only the age counts (ABANDONED_AFTER_S)
    empty, partial, live = _abandoned()
    assert answer_recovery.sweep_abandoned() == 2
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[empty, partial, live])}
    assert (rows[empty].status, rows[empty].error_code) == ("error", "interrupted")
    assert (rows[partial].status, rows[partial].content) == ("partial", "반쯤")
    assert rows[live].status == "streaming"  # an answer still being written elsewhere is left alone


def _quiet_and_alive() -> tuple[int, int, int]:
    conversation = Conversation.objects.create(session_key="q" * 32, title="quiet")
    now = timezone.now()
    rows = [
        Message.objects.create(conversation=conversation, role="assistant", status="streaming", content=text)
        for text in ("조용함", "살아 있음", "막 시작함")
    ]
    quiet, alive, new = (row.pk for row in rows)
    # Created a minute ago: its writer last checkpointed 40 s ago; the other one 2 s ago.
    Message.objects.filter(pk__in=[quiet, alive]).update(created_at=now - dt.timedelta(seconds=60))
    Message.objects.filter(pk=quiet).update(alive_at=now - dt.timedelta(seconds=40))
    Message.objects.filter(pk=alive).update(alive_at=now - dt.timedelta(seconds=2))
    return quiet, alive, new


def test_an_answer_whose_writer_went_quiet_is_swept_within_three_checkpoint_rounds(settings):
    settings.CHAT_CHECKPOINT_S = 10.0
    assert answer_recovery.stale_after_s() == 30.0
    quiet, alive, new = _quiet_and_alive()
    assert answer_recovery.sweep_abandoned() == 1
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[quiet, alive, new])}
    assert (rows[quiet].status, rows[quiet].error_code, rows[quiet].content) == ("partial", "interrupted", "조용함")
    assert rows[alive].status == "streaming"  # checkpointed 2 s ago: its replica is alive
    assert rows[new].status == "streaming"  # no checkpoint yet, created just now


async def test_a_swept_answer_whose_writer_was_only_cut_off_gets_its_final_write(settings):
    """A writer cut off from the database longer than the window: the sweep marks its row, its final write wins."""
    settings.CHAT_CHECKPOINT_S = 10.0
    stored = await database_sync_to_async(_start)()
    await database_sync_to_async(
        lambda: Message.objects.filter(pk=stored.message_id).update(
            content="반쯤", alive_at=timezone.now() - dt.timedelta(seconds=45)
        )
    )()
    assert await database_sync_to_async(answer_recovery.sweep_abandoned)() == 1
    answer_recovery.defer(stored, Outcome(status=Message.Status.COMPLETE, content="빈집 답변 전체"))
    await _drained()
    row = await database_sync_to_async(_row)(stored.message_id)
    assert (row.status, row.content) == (Message.Status.COMPLETE, "빈집 답변 전체")
