"""Operators' admin: multi-file upload, progress and failures, re-index and delete actions, index status page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.models import Collection, Document, Job
from knowledge.search import get_search_backend
from knowledge.services import document_upload
from tests.knowledge.files import make_pdf

# transaction=True: ingestion jobs are dispatched when the upload commits (KNOWLEDGE_JOBS_INLINE runs them then).
pytestmark = [pytest.mark.fast, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def test_upload_many_files_from_the_admin(admin_client, collection):
    page = admin_client.get("/admin/knowledge/document/upload/")
    assert page.status_code == 200 and b"multiple" in page.content
    assert admin_client.get("/admin/knowledge/document/add/").url.endswith("/admin/knowledge/document/upload/")

    response = admin_client.post(
        "/admin/knowledge/document/upload/",
        {
            "collection": collection.pk,
            "files": [
                SimpleUploadedFile("a.txt", "빈집 실태조사 안내".encode()),
                SimpleUploadedFile("b.md", "# 빈집은행\n\n빈집은행 등록 안내".encode()),
            ],
            "category": "안내",
        },
    )
    assert response.status_code == 302
    assert sorted(Document.objects.values_list("original_filename", "status", "category")) == [
        ("a.txt", "indexed", "안내"),
        ("b.md", "indexed", "안내"),
    ]
    changelist = admin_client.get("/admin/knowledge/document/?status__exact=indexed")
    assert changelist.status_code == 200 and "빈집은행".encode() in changelist.content


def test_a_bad_file_is_reported_on_the_form_and_nothing_is_stored(admin_client, collection):
    response = admin_client.post(
        "/admin/knowledge/document/upload/",
        {
            "collection": collection.pk,
            "files": [SimpleUploadedFile("a.txt", "빈집".encode()), SimpleUploadedFile("x.pdf", b"%PDF-1.4 junk")],
        },
    )
    assert response.status_code == 200
    assert "x.pdf" in response.content.decode() and "not a readable PDF" in response.content.decode()
    assert Document.objects.count() == 0


def test_failures_and_progress_are_visible(admin_client, collection):
    failed = document_upload(collection=collection, filename="scan.pdf", data=make_pdf([" "])).document
    page = admin_client.get(f"/admin/knowledge/document/{failed.pk}/change/")
    body = page.content.decode()
    assert page.status_code == 200 and "No text could be extracted" in body and "failed" in body
    jobs = admin_client.get("/admin/knowledge/job/?status__exact=failed")
    assert jobs.status_code == 200 and b"<progress" in jobs.content


def test_reindex_and_delete_actions(admin_client, collection):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode()).document
    get_search_backend().delete_document(document.pk)  # drift: the index lost it
    response = admin_client.post(
        "/admin/knowledge/document/", {"action": "reindex_documents", "_selected_action": [document.pk]}
    )
    assert response.status_code == 302
    assert get_search_backend().document_chunk_counts() == {document.pk: 1}
    assert Job.objects.filter(kind=Job.Kind.REINDEX_DOCUMENT, status=Job.Status.DONE).count() == 1

    response = admin_client.post(
        "/admin/knowledge/document/", {"action": "delete_documents", "_selected_action": [document.pk]}
    )
    assert response.status_code == 302
    assert not Document.objects.exists() and get_search_backend().document_chunk_counts() == {}


def test_editing_metadata_refreshes_the_index_copy(admin_client, collection):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode()).document
    response = admin_client.post(
        f"/admin/knowledge/document/{document.pk}/change/",
        {"title": "철거 안내", "source": "시청", "category": "보조금", "language": "ko", "timestamp_0": "", "timestamp_1": "",
         "jobs-TOTAL_FORMS": "0", "jobs-INITIAL_FORMS": "0", "chunks-TOTAL_FORMS": "0", "chunks-INITIAL_FORMS": "0"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    document.refresh_from_db()
    assert (document.title, document.category) == ("철거 안내", "보조금")
    from knowledge.services import retrieve_sync

    hit = retrieve_sync("빈집 철거")[0]
    assert (hit.chunk.title, hit.chunk.source, hit.chunk.category) == ("철거 안내", "시청", "보조금")


def test_index_status_page(admin_client, collection):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode()).document
    page = admin_client.get("/admin/knowledge/document/index-status/")
    body = page.content.decode()
    info = get_search_backend().info()
    assert page.status_code == 200
    for expected in (info.alias, info.concrete_index, "char-bigram", "multilingual-e5-small", "384"):
        assert expected in body
    assert "Every document" in body

    get_search_backend().delete_document(document.pk)
    assert "a" in admin_client.get("/admin/knowledge/document/index-status/").content.decode()
    assert admin_client.post("/admin/knowledge/document/index-status/").status_code == 302  # reconcile
    assert get_search_backend().document_chunk_counts() == {document.pk: 1}


def test_deleting_a_collection_clears_its_documents_from_the_index(admin_client, collection):
    document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode())
    response = admin_client.post(f"/admin/knowledge/collection/{collection.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Collection.objects.exists() and get_search_backend().document_chunk_counts() == {}
