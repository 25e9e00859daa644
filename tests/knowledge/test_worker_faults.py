"""The knowledge worker survives its database going away: it waits, reconnects and requeues what it was running."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.utils import timezone

from knowledge import jobs
from knowledge.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_database_error_makes_the_worker_wait_and_carry_on_not_exit(monkeypatch):
    calls: list[str] = []

    def claim(*, worker_id: str):
        calls.append(worker_id)
        if len(calls) <= 2:
            raise OperationalError("server closed the connection unexpectedly")
        return None

    slept: list[float] = []
    monkeypatch.setattr(jobs, "claim_next", claim)
    monkeypatch.setattr(jobs, "_sleep_unless_stopped", lambda seconds, should_stop: slept.append(seconds))
    assert jobs.work(worker_id="w1", burst=True) == 0  # returned normally: no exception escaped
    assert len(calls) == 3
    assert len(slept) == 2 and slept[1] > slept[0]  # backoff grows


def test_the_job_running_when_the_database_went_is_requeued_with_its_attempt_given_back(monkeypatch):
    job = Job.objects.create(kind=Job.Kind.INGEST, status=Job.Status.QUEUED, max_attempts=3, run_after=timezone.now())
    state = {"broke": False}
    real_run = jobs.run_job

    def run(claimed):
        if not state["broke"]:
            state["broke"] = True
            raise OperationalError("terminating connection due to administrator command")
        return real_run(claimed)

    monkeypatch.setattr(jobs, "run_job", run)
    monkeypatch.setattr(jobs, "_sleep_unless_stopped", lambda seconds, should_stop: None)
    requeued: list[int] = []
    real_requeue = jobs.requeue_interrupted

    def requeue(job_id: int, *, worker_id: str) -> int:
        done = real_requeue(job_id, worker_id=worker_id)
        requeued.append(done)
        job_row = Job.objects.get(pk=job_id)
        assert (job_row.status, job_row.attempts, job_row.locked_by) == (Job.Status.QUEUED, 0, "")
        return done

    monkeypatch.setattr(jobs, "requeue_interrupted", requeue)
    jobs.work(worker_id="w2", burst=True)
    assert requeued == [1]
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.DONE, 1)  # ran again, once (no document: skipped)
