"""Usage accounting: per day, model group, API key and user, counted in Redis, summed into PostgreSQL.

The request path never writes the database for usage. ``settle`` adds the request to a
Redis hash in its own round trip (one ``EVALSHA`` of ``USAGE_SCRIPT``: ``HINCRBY`` of the
fields ``<day>|<model>|<key id>|<user id>|<metric>``, and the same call charges the caller's
monthly budgets, whose counters share the hash's slot) on one of ``SHARDS`` hashes, the
caller's (a hash of who it is), so the load spreads over a cluster's nodes. ``usage_flush`` (every
GATEWAY_USAGE_FLUSH_S in each server process, or ``manage.py flush_usage``) moves the
hashes into ``ModelUsage`` rows:

1. ``FLUSH_BEGIN_SCRIPT`` renames a shard's live hash to a batch and lists the batch as
   pending, atomically: increments after that go to a new live hash, none is lost;
2. the batch's counts are added to the rows in one transaction that also records the
   batch id (``UsageFlush``, unique): a batch is applied at most once, whichever replica
   flushes it, and a crash before the commit leaves it pending for the next flush;
3. ``FLUSH_END_SCRIPT`` deletes the batch.

So the rows add up exactly to what the replicas counted. While Redis is unreachable (or
not configured) a process counts in memory and its flushes write those counts directly
(lost only if the process dies before its next flush).

Metrics: ``r`` requests, ``c`` answered from the response cache, ``e`` ended in an error,
``p`` prompt tokens, ``o`` completion (output) tokens, ``l`` latency in ms (summed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.utils import timezone

from chat.gateway.scripts import FLUSH_BEGIN_SCRIPT, FLUSH_END_SCRIPT
from chat.gateway.types import UsageRecord
from config.per_loop import LoopTask, PerLoop
from config.redis import key, redis_enabled, sync_redis

log = logging.getLogger(__name__)

SHARDS = 16
METRICS = {
    "r": "requests",
    "c": "cached",
    "e": "errors",
    "p": "prompt_tokens",
    "o": "completion_tokens",
    "l": "latency_ms",
}
# A monthly budget counter (chat/gateway/budgets.py, charged by USAGE_SCRIPT) outlives its month
# by a few weeks (the admin may still read it), then goes.
BUDGET_COUNTER_TTL_S = 62 * 86400
# Applied batch ids are kept this long (a batch left pending longer is still applied once:
# its id is looked up before the rows are touched, and a batch is never that old in practice).
FLUSH_RECORDS_DAYS = 30


def live_key(shard: int) -> str:
    # The {u<n>} hash tag keeps a shard's live hash, batches and pending set in one slot
    # (RENAME and the flush scripts need that in a Redis Cluster).
    return key("usage", f"{{u{shard}}}")


def batch_key(shard: int, batch: str) -> str:
    return f"{live_key(shard)}:batch:{batch}"


def pending_key(shard: int) -> str:
    return f"{live_key(shard)}:pending"


_day: tuple[str, float] = ("", 0.0)  # (today in TIME_ZONE, epoch second tomorrow starts)


def day_now() -> str:
    global _day
    now = time.time()
    if now >= _day[1]:
        local = timezone.localtime()
        tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=local.tzinfo)
        _day = (local.date().isoformat(), tomorrow.timestamp())
    return _day[0]


def reset_day_cache() -> None:
    global _day
    _day = ("", 0.0)


def record_args(
    subject: Any, record: UsageRecord, *, cached: bool, prompt_tokens: int, completion_tokens: int
) -> tuple[str, list[Any]]:
    """(field prefix, [metric, amount, ...]) of one request."""
    prefix = f"{day_now()}|{record.model}|{subject.api_key_id or 0}|{subject.user_id or 0}|"
    amounts = [
        "r", 1,
        "c", 1 if cached else 0,
        "e", 1 if record.error else 0,
        "p", max(0, int(prompt_tokens)),
        "o", max(0, int(completion_tokens)),
        "l", max(0, int(record.latency_ms)),
    ]  # fmt: skip
    return prefix, amounts


@lru_cache(maxsize=16384)
def shard_of(tag: str) -> int:
    """The usage shard of a subject (``key:7``, ``user:42``...): its budget counters live in its slot too."""
    return zlib.crc32(tag.encode()) % SHARDS


def subject_tag(subject: Any) -> str:
    if subject.api_key_id is not None:
        return f"key:{subject.api_key_id}"
    if subject.user_id is not None and not subject.is_anonymous:
        return f"user:{subject.user_id}"
    return f"anon:{subject.session_key or subject.ip}"


def redis_call(
    subject: Any,
    prefix: str,
    amounts: list[Any],
    *,
    budget_keys: Sequence[str] = (),
    tokens: int = 0,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``USAGE_SCRIPT`` for one request: its counters (``amounts`` empty: none) and
    the ``tokens`` to charge to its budget counters (``budget_keys``, in the subject's shard)."""
    keys = [live_key(shard_of(subject_tag(subject))), *budget_keys]
    return keys, [prefix, tokens, BUDGET_COUNTER_TTL_S, *amounts]


class LocalUsage:
    """Counts of this process while Redis cannot take them; flushed like a batch."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, prefix: str, amounts: list[Any]) -> None:
        with self._lock:
            for metric, amount in zip(amounts[::2], amounts[1::2], strict=True):
                if amount:
                    self._counts[prefix + metric] += int(amount)

    def take(self) -> dict[str, int]:
        with self._lock:
            counts, self._counts = dict(self._counts), defaultdict(int)
        return counts

    def give_back(self, counts: dict[str, int]) -> None:
        with self._lock:
            for field, n in counts.items():
                self._counts[field] += n


local_usage = LocalUsage()


# --- flush -----------------------------------------------------------------------------------


@dataclass(slots=True)
class FlushReport:
    batches: int = 0
    rows: int = 0
    requests: int = 0


def usage_flush() -> FlushReport:
    """Move every counted request into ``ModelUsage`` (sync: commands, the background flusher's thread)."""
    report = FlushReport()
    counts = local_usage.take()
    if counts:
        try:
            _apply(f"local-{uuid.uuid4().hex}", counts, report)
        except Exception:
            local_usage.give_back(counts)
            raise
    if redis_enabled():
        with sync_redis() as r:
            for shard in range(SHARDS):
                _flush_shard(r, shard, report)
    return report


def _flush_shard(r: Any, shard: int, report: FlushReport) -> None:
    pending = sorted(m.decode() for m in r.smembers(pending_key(shard)))
    batch = uuid.uuid4().hex
    if r.eval(FLUSH_BEGIN_SCRIPT, 3, live_key(shard), batch_key(shard, batch), pending_key(shard), batch):
        pending.append(batch)
    for b in pending:
        raw = r.hgetall(batch_key(shard, b))
        counts = {f.decode(): int(n) for f, n in raw.items()}
        if counts:
            _apply(b, counts, report)
        r.eval(FLUSH_END_SCRIPT, 2, batch_key(shard, b), pending_key(shard), b)


def _apply(batch: str, counts: dict[str, int], report: FlushReport) -> None:
    """Add one batch to the rows, at most once (the batch id is recorded in the same transaction)."""
    from django.db import IntegrityError, transaction
    from django.db.models import F

    from chat.gateway.models import APIKey, ModelUsage, UsageFlush

    rows: dict[tuple[date, str, int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(METRICS.values(), 0))
    for field, n in counts.items():
        try:
            day, model, key_id, user_id, metric = field.rsplit("|", 4)
            rows[(date.fromisoformat(day), model, int(key_id), int(user_id))][METRICS[metric]] += n
        except (ValueError, KeyError):
            log.warning("usage counter with an unknown field %r ignored", field)
    if not rows:
        return
    prefixes = dict(APIKey.objects.filter(pk__in={k for _, _, k, _ in rows if k}).values_list("pk", "prefix"))
    try:
        with transaction.atomic():
            # First: a second flusher of the same batch stops here (unique), before touching a row.
            UsageFlush.objects.create(batch=batch, rows=len(rows))
            for (day, model, key_id, user_id), values in rows.items():
                lookup = {"day": day, "model": model, "api_key_id": key_id, "user_id": user_id}
                increments = {name: F(name) + n for name, n in values.items() if n}
                if ModelUsage.objects.filter(**lookup).update(**increments):
                    continue
                try:
                    with transaction.atomic():
                        ModelUsage.objects.create(**lookup, api_key_prefix=prefixes.get(key_id, ""), **values)
                except IntegrityError:  # another flusher created the row meanwhile
                    ModelUsage.objects.filter(**lookup).update(**increments)
    except IntegrityError:
        log.info("usage batch %s was already applied by another flusher", batch)
        return
    report.batches += 1
    report.rows += len(rows)
    report.requests += sum(v["requests"] for v in rows.values())
    UsageFlush.objects.filter(flushed_at__lt=timezone.now() - timedelta(days=FLUSH_RECORDS_DAYS)).delete()


# --- background flusher ----------------------------------------------------------------------

_flushers: PerLoop[LoopTask] = PerLoop(LoopTask)


def ensure_flusher() -> None:
    """Start this event loop's periodic flush (once; no-op when GATEWAY_USAGE_FLUSH_S is 0)."""
    period = settings.GATEWAY_USAGE_FLUSH_S
    if period <= 0:
        return
    _flushers.get().keep(lambda: _flush_forever(period), "usage-flush")


async def _flush_forever(period: float) -> None:
    from asgiref.sync import sync_to_async

    while True:
        # Jitter: the workers and replicas started together do not all flush at once.
        await asyncio.sleep(period * random.uniform(0.8, 1.2))
        try:
            await sync_to_async(_flush_in_thread, thread_sensitive=False)()
        except Exception:
            log.warning("usage flush failed; the counts stay in Redis for the next one", exc_info=True)


def _flush_in_thread() -> FlushReport:
    from django.db import connection

    try:
        return usage_flush()
    finally:
        connection.close()  # a worker thread's connection is not closed by a request cycle
