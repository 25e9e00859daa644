"""The knowledge API's rules that need no service (SQLite, local search, jobs inline):
fail-closed scopes, collection management rights, sync semantics, bounded pages, text
documents, public error text, JSON 404s and the OpenAPI description."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from knowledge.api.serializers import public_error
from knowledge.models import Collection, Document, Job
from knowledge.services import (
    DuplicateDocument,
    InvalidExternalId,
    document_sync,
    document_upload,
    text_upload,
)

pytestmark = [pytest.mark.fast, pytest.mark.django_db(transaction=True)]

API = "/api/knowledge"


def session(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def with_token(user, token) -> APIClient:
    """A request authenticated by some token credential (what an authentication class returns)."""
    client = APIClient()
    client.force_authenticate(user=user, token=token)
    return client


def test_it_fails_closed_for_a_credential_without_scopes(staff, collection):
    def key(*scopes: str) -> SimpleNamespace:  # the shape of an API-key principal: scopes, speaks for a user
        return SimpleNamespace(scopes=frozenset(scopes), user_id=staff.pk)

    for token in (object(), SimpleNamespace(scopes=None, user_id=staff.pk), key("chat")):
        response = with_token(staff, token).get(f"{API}/collections/")
        assert response.status_code == 403, token
        assert response.json()["error"]["scope"] == "knowledge:read"
    read = with_token(staff, key("knowledge:read"))
    assert read.get(f"{API}/collections/").status_code == 200
    assert read.post(f"{API}/collections/", {"name": "x"}, format="json").json()["error"]["scope"] == "knowledge:write"
    write = with_token(staff, key("knowledge:write"))
    assert write.get(f"{API}/collections/").status_code == 200  # write implies read
    assert write.post(f"{API}/collections/", {"name": "새 자료"}, format="json").status_code == 201


def test_no_credentials_is_a_401_with_a_bearer_challenge(collection):
    response = session().get(f"{API}/documents/")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert "API key" in response.json()["error"]["message"]


def test_who_may_manage_collections(staff, alice, collection):
    assert session(alice).post(f"{API}/collections/", {"name": "앨리스"}, format="json").status_code == 403
    alice.user_permissions.add(Permission.objects.get(codename="add_collection"))
    created = session(alice).post(f"{API}/collections/", {"name": "앨리스 자료", "slug": "alice"}, format="json")
    assert created.status_code == 201, created.content
    assert Collection.objects.get(slug="alice").readers.filter(pk=alice.pk).exists()  # the creator is granted
    # Changing needs change_collection (and a grant); the public collection is not hers.
    assert session(alice).patch(f"{API}/collections/alice/", {"is_public": True}, format="json").status_code == 403
    alice.user_permissions.add(Permission.objects.get(codename="change_collection"))
    assert session(alice).patch(f"{API}/collections/alice/", {"is_public": True}, format="json").status_code == 200
    assert (
        session(alice).patch(f"{API}/collections/{collection.slug}/", {"name": "x"}, format="json").status_code == 403
    )
    assert session(staff).delete(f"{API}/collections/alice/").status_code == 204
    assert session(staff).get(f"{API}/collections/alice/").status_code == 404


def test_sync_creates_then_does_nothing_then_replaces(collection, committed):
    with committed():
        first = document_sync(collection=collection, external_id="n-1", upload=text_upload(text="빈집 신고 안내"))
    assert first.created and first.changed and first.job is not None
    jobs = Job.objects.count()
    same = document_sync(collection=collection, external_id="n-1", upload=text_upload(text="빈집 신고 안내"))
    assert (same.created, same.changed, same.job) == (False, False, None) and Job.objects.count() == jobs

    with committed():
        retitled = document_sync(
            collection=collection,
            external_id="n-1",
            upload=text_upload(text="빈집 신고 안내"),
            metadata={"title": "신고"},
        )
    assert retitled.changed and retitled.job.kind == Job.Kind.REINDEX_DOCUMENT
    with committed():
        replaced = document_sync(collection=collection, external_id="n-1", upload=text_upload(text="빈집 신고 새 안내"))
    assert replaced.job.kind == Job.Kind.INGEST and replaced.document.pk == first.document.pk
    document = Document.objects.get()
    assert document.title == "신고" and document.chunks.get().text == "빈집 신고 새 안내"


def test_sync_adopts_the_same_bytes_and_refuses_them_under_another_id(collection, committed):
    with committed():
        uploaded = document_upload(collection=collection, filename="a.txt", data="빈집 정비 안내".encode()).document
    adopted = document_sync(collection=collection, external_id="cms-7", upload=text_upload(text="빈집 정비 안내"))
    assert adopted.document.pk == uploaded.pk and not adopted.created and adopted.job is None
    assert Document.objects.get().external_id == "cms-7"
    with pytest.raises(DuplicateDocument):
        document_sync(collection=collection, external_id="cms-8", upload=text_upload(text="빈집 정비 안내"))
    for bad in ("", ".", "..", ".hidden", " lead", "a/b", "x" * 201, "tab\there"):
        with pytest.raises(InvalidExternalId):
            document_sync(collection=collection, external_id=bad, upload=text_upload(text="빈집"))
    assert Document.objects.count() == 1


def test_pages_are_bounded_and_filters_are_checked(staff, collection):
    client = session(staff)
    for params in ({"limit": 0}, {"limit": 201}, {"limit": "many"}, {"offset": -1}, {"updated_since": "어제"}):
        response = client.get(f"{API}/documents/", params)
        assert response.status_code == 400, params
        assert response.json()["error"]["fields"]
    assert client.get(f"{API}/documents/", {"limit": 200}).json()["results"] == []


def test_text_documents_and_json_errors(staff, collection):
    client = session(staff)
    response = client.post(
        f"{API}/documents/",
        {"collection": collection.slug, "text": "# 제목\n\n본문", "format": "markdown"},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()[0]["document"]["title"] == "제목"  # from the Markdown heading
    again = client.post(f"{API}/documents/", {"collection": collection.slug, "text": "# 제목\n\n본문", "format": "markdown"}, format="json")  # fmt: skip
    assert again.status_code == 200 and again.json()[0]["created"] is False
    assert client.post(f"{API}/documents/", {"collection": collection.slug, "text": "x", "format": "rtf"}, format="json").status_code == 400  # fmt: skip

    missing = client.post("/api/knowledge/documents/nope/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    slashless = client.get("/api/knowledge/documents")
    assert slashless.status_code == 404 and "trailing slash" in slashless.json()["error"]["message"]


def test_errors_shown_to_integrators_hide_internal_detail():
    assert public_error("") == ""
    assert (
        public_error("corrupt_file: 'a.pdf' is not a readable PDF.") == "corrupt_file: 'a.pdf' is not a readable PDF."
    )
    leaked = public_error("search_unavailable: Elasticsearch write failed (503): http://10.0.0.5:9200 ...")
    assert leaked.startswith("search_unavailable:") and "10.0.0.5" not in leaked
    trace = public_error(
        'ConnectionError: Connection refused\n\nTraceback (most recent call last):\n  File "/app/x.py"'
    )
    assert "Traceback" not in trace and "/app" not in trace and trace.startswith("internal_error")
    retry = public_error("attempt 1 failed, retrying in 30s: ConnectTimeout to triton:8001")
    assert retry.startswith("attempt 1 failed, retrying in 30s") and "triton" not in retry


def test_the_schema_describes_every_operation_its_scope_and_errors(staff):
    schema = session(staff).get("/api/schema/?format=json").json()
    paths = schema["paths"]
    expected = {
        "/api/knowledge/collections/": {"get", "post"},
        "/api/knowledge/collections/{collection}/": {"get", "patch", "delete"},
        "/api/knowledge/collections/{collection}/documents/by-external-id/{external_id}/": {"get", "put", "delete"},
        "/api/knowledge/documents/": {"get", "post"},
        "/api/knowledge/documents/{id}/": {"get", "patch", "delete"},
        "/api/knowledge/documents/{id}/reindex/": {"post"},
        "/api/knowledge/jobs/{id}/": {"get"},
        "/api/knowledge/search/": {"post"},
        "/api/exports/conversations/": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert operation["x-required-scopes"], (path, method)
            assert {"401", "403"} <= set(operation["responses"]), (path, method)
            assert {"apiKey": []} in operation["security"]
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert paths["/api/knowledge/documents/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("PaginatedDocumentList")


def test_a_long_name_gets_a_slug_that_fits(staff):
    """A 200-character name (the most a name may have) gives a slug cut to its 100 (found by schemathesis: a 500)."""
    response = session(staff).post("/api/knowledge/collections/", {"name": "가" * 150 + "0" * 50}, format="json")
    assert response.status_code == 201, response.content
    slug = response.json()["slug"]
    assert len(slug) == Collection._meta.get_field("slug").max_length and slug == "가" * 100
