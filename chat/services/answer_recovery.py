"""Answers that finish while the database is down are written when it comes back; none stays ``streaming``.

An answer's row is stored first as ``streaming`` and filled by one final UPDATE
(``answer_store``). If that UPDATE fails because PostgreSQL is unreachable (a restart takes a
few seconds; a failover longer), the user has already received the answer: losing it, or
leaving the row ``streaming`` with no text, is what issue #20 saw. So:

- ``defer(stored, outcome)`` keeps the final write in memory and one task per event loop
  retries the pending writes with backoff (0.5 s doubling to 10 s) until the database takes
  them, oldest first; the conversation's Redis history is dropped afterwards so the next read
  refills it from the database. ``chat_answer_writes_pending`` shows the queue,
  ``chat_answer_writes_deferred_total`` how many waited.
- A process that dies with writes pending (or mid-answer) leaves rows ``streaming``;
  ``sweep_abandoned`` marks those whose writer went quiet as ``partial`` (the last
  checkpoint's text) or ``error`` (none), code ``interrupted``. Quiet means no sign of life
  (``alive_at``, set by every checkpoint round, else ``created_at``) for ``stale_after_s()``:
  three checkpoint intervals (30 s by default), or ``ABANDONED_AFTER_S`` when checkpoints are
  off. Every process runs it after a flush and every half of that; a partial index keeps it
  to the streaming rows. A row swept while its writer was only cut off from the database
  (an outage longer than the window) is put right by that writer's final write, which is not
  conditional on the status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque

from django.conf import settings
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from chat import history as chat_history
from chat.asyncdb import db
from chat.models import Message
from chat.services.answer_store import Outcome, Stored, store_finish
from config.per_loop import LoopTask, PerLoop
from monitoring.metrics import ANSWER_WRITES_DEFERRED, ANSWER_WRITES_PENDING
from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)

# Beyond this many pending writes per process the oldest is given up (the sweep marks its row).
MAX_PENDING = 10_000
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
# With checkpoints off (CHAT_CHECKPOINT_S=0) no row shows a sign of life: one still
# "streaming" this long after it was created belongs to no live answer.
ABANDONED_AFTER_S = 30 * 60.0
# Checkpoint rounds a writer may miss (a slow database, a busy loop) before its rows count as abandoned.
MISSED_ROUNDS = 3
INTERRUPTED = "interrupted"


class _Queue(LoopTask):
    def __init__(self) -> None:
        super().__init__()
        self.pending: deque[tuple[Stored, Outcome]] = deque()


_queues: PerLoop[_Queue] = PerLoop(_Queue)
_sweeper: PerLoop[LoopTask] = PerLoop(LoopTask)


def defer(stored: Stored, outcome: Outcome) -> None:
    """Write this answer's final state as soon as the database takes it (this process, in order)."""
    queue = _queues.get()
    if len(queue.pending) >= MAX_PENDING:
        lost, _ = queue.pending.popleft()
        ANSWER_WRITES_PENDING.dec()
        log.error("answer %s: too many deferred writes, giving this one up (the sweep marks it)", lost.message_id)
    queue.pending.append((stored, outcome))
    ANSWER_WRITES_DEFERRED.inc()
    ANSWER_WRITES_PENDING.inc()
    queue.keep(lambda: _flush(queue), "chat-deferred-writes")


def pending_count() -> int:
    """Deferred writes of the running loop (tests, the fault suite)."""
    queue = _queues.peek()
    return len(queue.pending) if queue else 0


async def _flush(queue: _Queue) -> None:
    delay = BACKOFF_FIRST_S
    while queue.pending:
        stored, outcome = queue.pending[0]
        try:
            await db(store_finish)(stored, outcome)
        except Exception as exc:
            if not is_unreachable_error(exc):
                # Not an outage (a bug, bad data): retrying cannot help; the sweep marks the row.
                log.exception("answer %s: deferred write failed for good", stored.message_id)
                queue.pending.popleft()
                ANSWER_WRITES_PENDING.dec()
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            continue
        queue.pending.popleft()
        ANSWER_WRITES_PENDING.dec()
        delay = BACKOFF_FIRST_S
        log.info("answer %s: deferred final write stored (%d still pending)", stored.message_id, len(queue.pending))
        await chat_history.drop_history(stored.conversation_id)
    await sweep_soon()


# --- abandoned rows ---------------------------------------------------------------------------


def stale_after_s() -> float:
    """How long a ``streaming`` row may show no sign of life before it counts as abandoned."""
    interval = settings.CHAT_CHECKPOINT_S
    return MISSED_ROUNDS * interval if interval > 0 else ABANDONED_AFTER_S


def sweep_abandoned(*, older_than_s: float | None = None) -> int:
    """Mark answers left ``streaming`` by a process that died: ``partial`` with their checkpointed text, or ``error``."""
    cutoff = timezone.now() - dt.timedelta(seconds=stale_after_s() if older_than_s is None else older_than_s)
    quiet = Q(alive_at__lt=cutoff) | Q(alive_at__isnull=True, created_at__lt=cutoff)
    return Message.objects.filter(quiet, status=Message.Status.STREAMING).update(
        status=Case(When(content="", then=Value(Message.Status.ERROR)), default=Value(Message.Status.PARTIAL)),
        error_code=INTERRUPTED,
    )


async def sweep_soon() -> None:
    """Sweep once now (quietly: a failure waits for the next round)."""
    try:
        if swept := await db(sweep_abandoned)():
            log.warning("marked %d abandoned streaming answer(s) as interrupted", swept)
    except Exception as exc:
        log.warning("sweep of abandoned answers failed: %s", exc, exc_info=not is_unreachable_error(exc))


def start_sweeper() -> None:
    """Run ``sweep_abandoned`` every half ``stale_after_s()`` on the running loop (idempotent)."""
    _sweeper.get().keep(_sweep_forever, "chat-sweep-abandoned")


async def _sweep_forever() -> None:
    while True:
        await sweep_soon()
        await asyncio.sleep(stale_after_s() / 2)
