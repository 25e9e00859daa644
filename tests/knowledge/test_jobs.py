"""The worker path: jobs queued by uploads, run by `manage.py knowledge_worker`, retried, failed, claimed once."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from config.errors import NotFound
from knowledge import jobs
from knowledge.models import Document, Job
from knowledge.search import get_search_backend, reset_backends
from knowledge.services import (
    document_delete,
    document_replace_file,
    document_request_reindex,
    document_update_metadata,
    document_upload,
    retrieve_sync,
)
from knowledge.types import SearchFilters
from tests.knowledge.files import make_pdf

# transaction=True: ingestion jobs are dispatched when the upload commits (KNOWLEDGE_JOBS_INLINE runs them then).
pytestmark = [pytest.mark.fast, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def queued(settings):
    settings.KNOWLEDGE_JOBS_INLINE = False


@pytest.fixture
def dead_search(settings):
    """The Elasticsearch backend pointed at a closed port: every call fails fast."""
    backends = {k: dict(v) for k, v in settings.SEARCH_BACKENDS.items()}
    backends["elasticsearch"].update(URLS=["http://127.0.0.1:9"], TIMEOUT=1, WRITE_TIMEOUT=1, MAX_RETRIES=0)
    settings.SEARCH_BACKENDS = backends
    settings.SEARCH_BACKEND = "elasticsearch"
    reset_backends()


def test_it_ingests_uploads_in_the_worker(queued, collection, capsys):
    result = document_upload(
        collection=collection, filename="a.md", data="# 빈집 안내\n\n빈집은행에 등록하세요.".encode()
    )
    document = result.document
    assert document.status == Document.Status.PENDING
    assert Job.objects.get(pk=result.job.pk).status == Job.Status.QUEUED
    assert retrieve_sync("빈집은행 등록", filters=SearchFilters(collection_ids=(collection.pk,))) == []

    call_command("knowledge_worker", "--once")

    document.refresh_from_db()
    job = Job.objects.get(pk=result.job.pk)
    assert document.status == Document.Status.INDEXED and document.chunk_count == 1
    assert (job.status, job.progress, job.attempts) == (Job.Status.DONE, 100, 1)
    assert job.locked_by and job.finished_at
    assert "ran 1 job(s)" in capsys.readouterr().out
    assert (
        retrieve_sync("빈집은행 등록", filters=SearchFilters(collection_ids=(collection.pk,)))[0].chunk.document_id
        == document.pk
    )


def test_burst_runs_until_the_queue_is_empty(queued, collection):
    for i in range(3):
        document_upload(collection=collection, filename=f"{i}.txt", data=f"{i}번 빈집 안내문입니다.".encode())
    assert jobs.work(burst=True) == 3
    assert set(Document.objects.values_list("status", flat=True)) == {Document.Status.INDEXED}
    assert jobs.work(burst=True) == 0


def test_a_bad_file_fails_for_good_and_says_why(queued, collection):
    result = document_upload(collection=collection, filename="scan.pdf", data=make_pdf([" "]))
    jobs.work(once=True)
    job = Job.objects.get(pk=result.job.pk)
    document = Document.objects.get(pk=result.document.pk)
    assert job.status == Job.Status.FAILED and job.attempts == 1 and "no_text" in job.error
    assert document.status == Document.Status.FAILED and "No text could be extracted" in document.error
    assert document.chunks.count() == 0


def test_a_dependency_failure_is_retried_with_backoff_then_fails(queued, collection, dead_search, settings):
    settings.KNOWLEDGE_JOB_MAX_ATTEMPTS = 2
    result = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode())
    jobs.work(once=True)
    job = Job.objects.get(pk=result.job.pk)
    document = Document.objects.get(pk=result.document.pk)
    assert job.status == Job.Status.QUEUED and job.attempts == 1 and job.run_after > timezone.now()
    assert "SearchUnavailable" in job.error and "retrying" in job.message
    assert document.status == Document.Status.PENDING and "retrying" in document.error
    assert document.chunks.count() == 0  # nothing partial stays

    assert jobs.work(burst=True) == 0  # not due yet
    Job.objects.filter(pk=job.pk).update(run_after=timezone.now())
    jobs.work(once=True)
    job.refresh_from_db()
    document.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 2 and job.finished_at
    assert document.status == Document.Status.FAILED and "search_unavailable" in document.error


def test_deleting_while_the_index_is_down_queues_the_index_cleanup(queued, collection, dead_search):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode()).document
    document_id = document.pk
    document_delete(document=document)
    assert not Document.objects.filter(pk=document_id).exists()
    job = Job.objects.get(kind=Job.Kind.DELETE_FROM_INDEX)
    assert job.payload == {"document_id": document_id} and job.status == Job.Status.QUEUED


def test_a_job_for_a_deleted_document_is_skipped(queued, collection):
    result = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode())
    Document.objects.filter(pk=result.document.pk).delete()
    jobs.work(once=True)
    job = Job.objects.get(pk=result.job.pk)
    assert job.status == Job.Status.DONE and job.message.startswith("skipped")


def test_a_reindex_of_a_document_deleted_since_it_was_read_queues_nothing(queued, collection):
    # A REST reindex racing a delete (schemathesis found it with two workers): the view read the
    # document, the delete committed, then the job's insert failed its foreign key at commit (500).
    stale = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode()).document
    Document.objects.filter(pk=stale.pk).delete()
    assert document_request_reindex(document=stale) is None
    assert not Job.objects.filter(kind=Job.Kind.REINDEX_DOCUMENT).exists()


def test_a_replace_or_metadata_change_of_a_document_deleted_since_it_was_read_is_not_found(queued, collection):
    # The same race for the other writes: save() fell back to an INSERT and brought the deleted
    # document back (or its job failed the foreign key at commit).
    stale = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode()).document
    Document.objects.filter(pk=stale.pk).delete()
    Job.objects.all().delete()
    with pytest.raises(NotFound, match="deleted while this request ran"):
        document_replace_file(document=stale, filename="b.txt", data="새 빈집 안내문입니다.".encode())
    with pytest.raises(NotFound, match="deleted while this request ran"):
        document_update_metadata(document=stale, title="새 제목")
    assert not Document.objects.filter(pk=stale.pk).exists() and not Job.objects.exists()


def test_jobs_of_a_dead_worker_are_requeued(queued, collection):
    job = document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode()).job
    claimed = jobs.claim_next(worker_id="dead")
    assert claimed.pk == job.pk and claimed.status == Job.Status.RUNNING
    assert jobs.claim_next(worker_id="other") is None
    Job.objects.filter(pk=job.pk).update(locked_at=timezone.now() - dt.timedelta(hours=2))
    assert jobs.requeue_stale(older_than=3600) == 1
    assert jobs.claim_next(worker_id="other").pk == job.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_claim_the_same_job(settings):
    # Committed jobs and real concurrent connections: SKIP LOCKED on PostgreSQL,
    # the conditional UPDATE under SQLite's single writer.
    created = Job.objects.bulk_create(
        [Job(kind=Job.Kind.DELETE_FROM_INDEX, payload={"document_id": i}) for i in range(12)]
    )
    expected = sorted(Job.objects.filter(pk__in=[j.pk for j in created]).values_list("pk", flat=True))
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(3)

    def worker(name: str) -> None:
        mine = claimed.setdefault(name, [])
        try:
            barrier.wait()
            while (job := jobs.claim_next(worker_id=name)) is not None:
                mine.append(job.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [pk for pks in claimed.values() for pk in pks]
    assert sorted(everything) == expected
    assert len(everything) == len(set(everything)) == 12


def test_the_search_backend_is_untouched_by_queued_jobs(queued, collection):
    document_upload(collection=collection, filename="a.txt", data="빈집 안내문입니다.".encode())
    assert get_search_backend().document_chunk_counts() == {}
