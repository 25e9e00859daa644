"""Background jobs on a database table, run by ``manage.py knowledge_worker``.

Why a table and not a broker: ingestion is rare and slow (seconds per document),
the database is already there and already the truth, a job and the document it
creates commit in one transaction (no job for a rolled-back upload, no upload
without its job), and the admin shows progress and failures with a plain
queryset. See docs/knowledge.md, "Jobs".

Claiming: PostgreSQL uses ``SELECT ... FOR UPDATE SKIP LOCKED`` so several workers
never take the same job and never wait on each other. SQLite has no row locks:
the claim is a conditional ``UPDATE ... WHERE status='queued'`` inside an IMMEDIATE
transaction (SQLite serialises writers), so two workers still cannot both win.

With KNOWLEDGE_JOBS_INLINE a job runs in the process that queued it, right after
it is queued (tests, the embedded run without a worker).

The worker survives its database going away (a restart, a failover, a cut connection):
``work`` catches the connection error, drops the connection, waits (backoff from 0.5 s
doubling to 30 s, logged once per interval by ``monitoring.outages``) and carries on; the
job it was running when the database went is put back in the queue once the database
answers (the attempt is not counted against it). A crash anyway is the supervisor's to
handle: compose and Kubernetes restart the container, ``make run`` restarts the command.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import time
import traceback
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, models, transaction
from django.utils import timezone

from knowledge.errors import InvalidUpload
from knowledge.models import Document, Job
from monitoring import tracing
from monitoring.outages import outage

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(*, kind: str, document: Document | None = None, payload: dict | None = None) -> Job:
    """Queue a job inside the caller's transaction; it is dispatched when that transaction commits.

    A rolled-back transaction leaves no job behind and starts nothing; under
    KNOWLEDGE_JOBS_INLINE the job runs in this process right after the commit.
    """
    job = Job.objects.create(
        kind=kind, document=document, payload=payload or {}, max_attempts=settings.KNOWLEDGE_JOB_MAX_ATTEMPTS
    )
    transaction.on_commit(partial(dispatch, job))
    return job


def dispatch(job: Job, *, now: bool = False) -> None:
    """Run the job now under KNOWLEDGE_JOBS_INLINE (or ``now``); otherwise a worker will pick it up."""
    if not (now or settings.KNOWLEDGE_JOBS_INLINE):
        return
    claimed = _claim(Job.objects.filter(pk=job.pk), worker_id="inline")
    if claimed is not None:
        run_job(claimed)


# --- claiming ----------------------------------------------------------------------


def _claim(candidates, *, worker_id: str) -> Job | None:
    # A lost race (SQLite only: no row locks) moves on to the next candidate.
    for _ in range(10):
        now = timezone.now()
        with transaction.atomic():
            queryset = candidates.filter(status=Job.Status.QUEUED, run_after__lte=now).order_by("run_after", "pk")
            if connection.features.has_select_for_update_skip_locked:
                queryset = queryset.select_for_update(skip_locked=True)
            job = queryset.first()
            if job is None:
                return None
            won = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                status=Job.Status.RUNNING,
                attempts=job.attempts + 1,
                locked_by=worker_id[:100],
                locked_at=now,
                started_at=now,
                progress=0,
                message="started",
            )
        if won:
            job.refresh_from_db()
            return job
    return None


def claim_next(*, worker_id: str) -> Job | None:
    return _claim(Job.objects.all(), worker_id=worker_id)


def requeue_stale(*, older_than: float | None = None) -> int:
    """Put back jobs whose worker died mid-run (locked longer than KNOWLEDGE_JOB_LOCK_TIMEOUT)."""
    older_than = settings.KNOWLEDGE_JOB_LOCK_TIMEOUT if older_than is None else older_than
    cutoff = timezone.now() - dt.timedelta(seconds=older_than)
    return Job.objects.filter(status=Job.Status.RUNNING, locked_at__lt=cutoff).update(
        status=Job.Status.QUEUED, locked_by="", locked_at=None, message="requeued: the worker stopped mid-run"
    )


# --- running -----------------------------------------------------------------------


def _handlers() -> dict[str, Callable[[Job, Callable[[int, str], None]], None]]:
    # The job bodies live in knowledge.services.ingest, which never enqueues (no import cycle).
    from knowledge.services import ingest as bodies

    def ingest(job: Job, progress) -> None:
        bodies.document_ingest(document=_document(job), progress=progress)

    def reindex(job: Job, progress) -> None:
        bodies.document_reindex(document=_document(job), progress=progress)

    def delete_from_index(job: Job, progress) -> None:
        bodies.document_delete_from_index(document_id=int(job.payload["document_id"]))

    return {Job.Kind.INGEST: ingest, Job.Kind.REINDEX_DOCUMENT: reindex, Job.Kind.DELETE_FROM_INDEX: delete_from_index}


class _Skip(Exception):
    """The job has nothing to do any more (its document was deleted)."""


def _document(job: Job) -> Document:
    if job.document_id is None:
        raise _Skip("the document was deleted")
    document = Document.objects.filter(pk=job.document_id).first()
    if document is None:
        raise _Skip("the document was deleted")
    return document


# The worker loop's own record of its database errors, for its log lines (once per interval, with
# a count). Not the backend's "database" state: that one decides whether connecting is tried, and
# a refusal it caused must not count as a new failure pushing the next attempt further away.
DATABASE = outage("database (knowledge worker)")
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 30.0


def requeue_interrupted(job_id: int, *, worker_id: str) -> int:
    """Put back a job this worker was running when its database connection broke."""
    return Job.objects.filter(pk=job_id, status=Job.Status.RUNNING, locked_by=worker_id[:100]).update(
        status=Job.Status.QUEUED,
        attempts=models.F("attempts") - 1,
        locked_by="",
        locked_at=None,
        message="requeued: the database connection broke mid-run",
    )


def run_job(job: Job) -> Job:
    """Run a claimed job; record done / retry / failed on it. Never raises for a job failure.

    Traced as ``knowledge.job``: a trace of its own in the worker, a child of the request
    that queued it when it runs inline.
    """
    with tracing.span("knowledge.job", **{"job.id": job.pk, "job.kind": job.kind, "job.attempt": job.attempts}):
        return _run_job(job)


def _run_job(job: Job) -> Job:

    def progress(percent: int, message: str) -> None:
        Job.objects.filter(pk=job.pk).update(progress=max(0, min(100, percent)), message=message[:300])

    handler = _handlers().get(job.kind)
    now = timezone.now
    try:
        if handler is None:
            raise InvalidUpload(f"unknown job kind {job.kind!r}")
        handler(job, progress)
    except _Skip as exc:
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.DONE, progress=100, message=f"skipped: {exc}", finished_at=now()
        )
    except InvalidUpload as exc:
        # The file itself is bad: retrying cannot help.
        logger.info("job %s failed permanently: %s", job.pk, exc)
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.FAILED, error=f"{exc.code}: {exc}", message="failed", finished_at=now()
        )
    except Exception as exc:
        tracing.record_error(exc)
        retry = job.attempts < job.max_attempts
        delay = settings.KNOWLEDGE_JOB_RETRY_DELAY * (2 ** (job.attempts - 1))
        logger.warning("job %s (%s) failed (attempt %s/%s): %s", job.pk, job.kind, job.attempts, job.max_attempts, exc)
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.QUEUED if retry else Job.Status.FAILED,
            run_after=now() + dt.timedelta(seconds=delay) if retry else job.run_after,
            error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc(limit=8)}"[:8000],
            message=f"retrying in {delay:g}s (attempt {job.attempts}/{job.max_attempts})" if retry else "failed",
            locked_by="",
            locked_at=None,
            finished_at=None if retry else now(),
        )
        if retry and job.kind == Job.Kind.INGEST and job.document_id:
            # Not failed for good yet: the admin shows it waiting, with the reason.
            Document.objects.filter(pk=job.document_id, status=Document.Status.FAILED).update(
                status=Document.Status.PENDING,
                error=f"attempt {job.attempts} failed, retrying in {delay:g}s: {exc}"[:4000],
            )
    else:
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.DONE, progress=100, message="done", error="", finished_at=now()
        )
    job.refresh_from_db()
    return job


def work(
    *,
    worker_id: str | None = None,
    once: bool = False,
    burst: bool = False,
    poll_interval: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = logger.info,
) -> int:
    """The worker loop; returns how many jobs ran.

    ``once``: run at most one job. ``burst``: run until the queue has no runnable job.
    Otherwise poll forever (until ``should_stop``).
    """
    worker_id = worker_id or default_worker_id()
    ran = 0
    last_stale_check = 0.0
    delay = RECONNECT_FIRST_S
    interrupted: int | None = None  # a job whose run the database cut short
    while not should_stop():
        try:
            if interrupted is not None:
                if requeue_interrupted(interrupted, worker_id=worker_id):
                    log(f"job {interrupted}: requeued (the database went away while it ran)")
                interrupted = None
            if time.monotonic() - last_stale_check > 60:
                if requeued := requeue_stale():
                    log(f"requeued {requeued} stale job(s)")
                last_stale_check = time.monotonic()
            job = claim_next(worker_id=worker_id)
            if job is None:
                DATABASE.succeeded()
                delay = RECONNECT_FIRST_S
                if once or burst:
                    break
                close_old_connections()
                time.sleep(poll_interval)
                continue
            log(f"job {job.pk}: {job.kind} (document {job.document_id}, attempt {job.attempts})")
            interrupted = job.pk
            job = run_job(job)
            interrupted = None
            log(f"job {job.pk}: {job.status} {job.message}")
            ran += 1
            delay = RECONNECT_FIRST_S
            if once:
                break
        except (OperationalError, InterfaceError) as exc:
            # The database went away (restart, failover, cut connection): drop the connection,
            # wait, try again. Never exit for it: a worker that exits processes nothing.
            DATABASE.failed(exc)
            _drop_connection()
            _sleep_unless_stopped(delay * random.uniform(0.8, 1.2), should_stop)
            delay = min(delay * 2, RECONNECT_MAX_S)
    return ran


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception:  # closing a broken connection may fail too; the next query reconnects
        connection.connection = None


def _sleep_unless_stopped(seconds: float, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(min(0.2, deadline - time.monotonic()))
