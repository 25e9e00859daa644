"""Checkpoints of the answers being streamed: one UPDATE per process and interval.

While an answer streams, its text so far is saved every CHAT_CHECKPOINT_S so that a crash of
the process loses at most that much (the final write replaces it). Each streaming answer
registers its live list of pieces; one task per event loop writes every answer whose text
grew since the last round, one prepared UPDATE executed for CHECKPOINT_BATCH answers at a
time, and only where the row is still ``streaming`` (a finished answer is never overwritten by an older
checkpoint, whichever write reaches the database first). Every round also sets ``alive_at`` on
each answer it holds, grown or not: a row whose writer went quiet (a killed replica) is then
told from one waiting on a slow model, and swept as interrupted within seconds
(chat.services.answer_recovery.stale_after_s).

Before this, every answer wrote its own checkpoint: with 1,000 streams and 10 s that was
100 UPDATEs (and thread hops) a second, a fifth of a core in the websocket benchmark.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.db import connection
from django.utils import timezone

from chat.asyncdb import db
from chat.models import Message
from config.per_loop import LoopTask, PerLoop
from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)

# Answers per database call (each call is one thread hop; the event loop runs between them).
CHECKPOINT_BATCH = 100


class _Book(LoopTask):
    """The answers streaming on one event loop, and what their last checkpoint held."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[str]] = {}
        self.saved: dict[int, int] = {}  # message id -> pieces in its last checkpoint


_books: PerLoop[_Book] = PerLoop(_Book)


def track(message_id: int, parts: list[str]) -> None:
    """Checkpoint ``parts`` (the list the token loop appends to) until ``untrack``."""
    interval = settings.CHAT_CHECKPOINT_S
    if interval <= 0:
        return
    book = _books.get()
    book.live[message_id] = parts
    book.keep(lambda: _run(book, interval), "chat-checkpoints")


def untrack(message_id: int) -> None:
    """The answer is about to be written for good: no more checkpoints of it."""
    book = _books.peek()
    if book is None:
        return
    book.live.pop(message_id, None)
    book.saved.pop(message_id, None)


async def _run(book: _Book, interval: float) -> None:
    while book.live:
        await asyncio.sleep(interval)
        await save_round(book)
    book.task = None  # nothing streams: the next track() starts a new task


async def save_round(book: _Book) -> None:
    """Write the answers whose text grew since their last checkpoint; mark every held answer alive."""
    if not book.live:
        return
    ids = list(book.live)
    for start in range(0, len(ids), CHECKPOINT_BATCH):
        batch = ids[start : start + CHECKPOINT_BATCH]
        grown: list[tuple[int, str]] = []
        idle: list[int] = []
        for mid in batch:
            parts = book.live.get(mid)
            if parts is None:  # finished while an earlier batch was being written
                continue
            if len(parts) != book.saved.get(mid, 0):
                grown.append((mid, "".join(parts)))
                book.saved[mid] = len(parts)
            else:
                idle.append(mid)
        try:
            await db(_store_checkpoints)(grown, idle)
        except Exception as exc:  # a missed checkpoint is not worth failing (or stopping) the others
            # A database outage is logged once per interval where it is seen (monitoring.outages).
            if not is_unreachable_error(exc):
                log.exception("chat checkpoint write failed")
            for mid, _text in grown:
                book.saved.pop(mid, None)  # try these again next round


def _store_checkpoints(grown: list[tuple[int, str]], idle: list[int]) -> None:
    """Each still-streaming answer that grew gets its text so far, and every one the time.

    The grown ones in one prepared UPDATE, executemany, not the ORM: an UPDATE with a CASE of
    hundreds of WHENs took the ORM tens of milliseconds to build, in a thread holding the GIL
    while the event loop waited to relay tokens (the benchmark's p99 doubled every round).
    psycopg sends the rows in one pipeline. The idle ones (waiting on the model) in one
    ``id IN (...)`` UPDATE.
    """
    now = timezone.now()
    if grown:
        qn = connection.ops.quote_name
        meta = Message._meta
        sql = (
            f"UPDATE {qn(meta.db_table)} SET {qn(meta.get_field('content').column)} = %s, "
            f"{qn(meta.get_field('alive_at').column)} = %s "
            f"WHERE {qn(meta.pk.column)} = %s AND {qn(meta.get_field('status').column)} = %s"
        )
        alive = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.executemany(sql, [(text, alive, mid, Message.Status.STREAMING) for mid, text in grown])
    if idle:
        Message.objects.filter(pk__in=idle, status=Message.Status.STREAMING).update(alive_at=now)


def book_for(loop: asyncio.AbstractEventLoop) -> _Book | None:
    """The loop's book (tests)."""
    return _books.peek(loop)
