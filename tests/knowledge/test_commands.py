"""Management commands: the sample knowledge loader and reindex."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from knowledge.models import Collection, Document
from knowledge.search import get_search_backend
from knowledge.services import document_upload, retrieve_sync

# transaction=True: ingestion jobs are dispatched when the upload commits (KNOWLEDGE_JOBS_INLINE runs them then).
pytestmark = [pytest.mark.fast, pytest.mark.django_db(transaction=True)]


def test_load_sample_knowledge_is_idempotent(capsys):
    call_command("load_sample_knowledge")
    first = capsys.readouterr().out
    assert "7 new, 0 already present" in first
    collection = Collection.objects.get(slug="vacant-house-policy")
    assert collection.name == "빈집 정책" and collection.is_public
    assert set(Document.objects.values_list("status", flat=True)) == {"indexed"}
    assert set(Document.objects.values_list("language", flat=True)) == {"ko", "en"}
    chunks = get_search_backend().info().chunk_count

    call_command("load_sample_knowledge")
    assert "0 new, 7 already present" in capsys.readouterr().out
    assert Document.objects.count() == 7 and get_search_backend().info().chunk_count == chunks

    hits = retrieve_sync("빈집 철거 보조금은 얼마까지 지원되나요?", top_k=3)
    assert "빈집 철거 보조금 신청 절차" in [h.chunk.title for h in hits]


def test_reindex_swaps_to_a_new_index_and_reconcile_repairs_drift(collection, capsys):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode()).document
    backend = get_search_backend()
    before = backend.info().concrete_index

    call_command("reindex", "--no-progress")
    out = capsys.readouterr().out
    after = backend.info()
    assert after.concrete_index != before and after.concrete_index in out and after.other_indexes == []
    assert backend.document_chunk_counts() == {document.pk: 1}

    backend.delete_document(document.pk)
    call_command("reindex", "--reconcile")
    assert "reconciled 1 document(s)" in capsys.readouterr().out
    assert backend.document_chunk_counts() == {document.pk: 1}


def test_a_bad_search_backend_setting_is_refused(settings):
    from django.core.exceptions import ImproperlyConfigured

    from knowledge.search import reset_backends

    settings.SEARCH_BACKEND = "solr"
    reset_backends()
    with pytest.raises(ImproperlyConfigured, match="not one of SEARCH_BACKENDS"):
        get_search_backend()
    settings.SEARCH_BACKENDS = {"solr": {"BACKEND": "knowledge.search.nope"}}
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        get_search_backend()
    settings.SEARCH_BACKENDS = {"solr": {"BACKEND": "knowledge.models"}}
    with pytest.raises(ImproperlyConfigured, match="does not define SearchBackend"):
        get_search_backend()
    from knowledge.apps import check_search_backend

    assert [e.id for e in check_search_backend()] == ["knowledge.E001"]
