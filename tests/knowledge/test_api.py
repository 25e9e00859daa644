"""REST API: upload (one or many), list, get, update, delete, search; scoping; bad input is a clear 4xx."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.models import Document, Job
from knowledge.search import get_search_backend
from knowledge.services import document_upload
from tests.knowledge.files import make_docx, make_pdf

# transaction=True: ingestion jobs are dispatched when the upload commits (KNOWLEDGE_JOBS_INLINE runs them then).
pytestmark = [pytest.mark.fast, pytest.mark.django_db(transaction=True)]

UPLOAD = "/api/knowledge/documents/"
SEARCH = "/api/knowledge/search/"


def client_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def upload(client, collection, *files, **fields):
    return client.post(UPLOAD, {"collection": collection, "files": list(files), **fields}, format="multipart")


def txt(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/plain")


@pytest.fixture
def editor(alice, private_collection):
    """A user who may write to the private collection (granted) but is not staff."""
    alice.user_permissions.add(Permission.objects.get(codename="add_document"))
    private_collection.readers.add(alice)
    return alice


def test_staff_uploads_many_files_at_once(staff, collection, media_files):
    response = upload(
        client_for(staff),
        collection.slug,
        txt("subsidy.txt", "철거 보조금은 최대 1,500만 원입니다."),
        SimpleUploadedFile("tax.pdf", make_pdf(["취득세 감면 안내"]), content_type="application/pdf"),
        SimpleUploadedFile("bank.docx", make_docx(["빈집은행 등록 안내"])),
        category="안내",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert [r["created"] for r in body] == [True, True, True]
    assert {r["document"]["status"] for r in body} == {"indexed"}  # KNOWLEDGE_JOBS_INLINE in tests
    assert {r["document"]["category"] for r in body} == {"안내"}
    assert all(r["job_id"] for r in body)

    again = upload(client_for(staff), str(collection.pk), txt("copy.txt", "철거 보조금은 최대 1,500만 원입니다."))
    assert again.status_code == 200 and again.json()[0]["created"] is False
    assert Document.objects.count() == 3


def test_one_bad_file_rejects_the_whole_upload(staff, collection, media_files):
    response = upload(
        client_for(staff),
        collection.slug,
        txt("good.txt", "빈집 안내문입니다."),
        SimpleUploadedFile("broken.pdf", b"%PDF-1.4 garbage", content_type="application/pdf"),
        txt("empty.md", "  "),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_upload"
    assert [(f["file"], f["code"]) for f in error["files"]] == [
        ("broken.pdf", "corrupt_file"),
        ("empty.md", "empty_file"),
    ]
    assert Document.objects.count() == 0 and Job.objects.count() == 0
    assert media_files() == []


@pytest.mark.parametrize(
    ("file", "status", "code"),
    [
        (SimpleUploadedFile("photo.jpg", b"\xff\xd8\xff\xe0", content_type="image/jpeg"), 415, "unsupported_file_type"),
        (SimpleUploadedFile("empty.txt", b""), 400, "empty_file"),
        (SimpleUploadedFile("bad.docx", b"PK\x03\x04xx"), 400, "corrupt_file"),
        (SimpleUploadedFile("binary.txt", bytes(range(256)) * 3), 400, "undecodable_text"),
        (SimpleUploadedFile("big.txt", "빈".encode() * 400), 413, "file_too_large"),
    ],
)
def test_bad_input_gets_a_clear_4xx(staff, collection, settings, media_files, file, status, code):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 1000
    response = upload(client_for(staff), collection.slug, file)
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert Document.objects.count() == 0 and media_files() == []


def test_upload_needs_write_access(alice, editor, collection, private_collection):
    assert client_for().post(UPLOAD, {}).status_code == 401  # no credentials: 401 with a Bearer challenge
    response = upload(client_for(editor), collection.slug, txt("a.txt", "빈집"))
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert upload(client_for(editor), private_collection.slug, txt("a.txt", "빈집 안내")).status_code == 202
    missing = upload(client_for(editor), "no-such-collection", txt("a.txt", "빈집"))
    assert missing.status_code == 400 and "unknown collection" in str(missing.json())
    assert upload(client_for(editor), private_collection.slug).json()["error"]["code"] == "no_file"


def test_callers_see_only_collections_they_may_read(staff, alice, collection, private_collection):
    public_doc = document_upload(collection=collection, filename="p.txt", data="공개 빈집 안내".encode()).document
    private_doc = document_upload(
        collection=private_collection, filename="s.txt", data="비공개 빈집 안내".encode()
    ).document

    assert client_for().get(UPLOAD).status_code == 401  # the API needs credentials
    listed = client_for(alice).get(UPLOAD).json()
    assert [d["id"] for d in listed["results"]] == [public_doc.pk]
    assert client_for(alice).get(f"{UPLOAD}{private_doc.pk}/").status_code == 404
    assert client_for(alice).get("/api/knowledge/collections/").json() == [
        {
            "id": collection.pk,
            "name": collection.name,
            "slug": "test-policy",
            "description": "",
            "is_public": True,
            "document_count": 1,
            "indexed_count": 1,
        }
    ]
    hits = client_for(alice).post(SEARCH, {"query": "빈집 안내", "top_k": 5}, format="json").json()["results"]
    assert {h["document_id"] for h in hits} == {public_doc.pk}
    forbidden = client_for(alice).post(
        SEARCH, {"query": "빈집", "collections": [private_collection.slug]}, format="json"
    )
    assert forbidden.status_code == 400

    private_collection.readers.add(alice)
    hits = client_for(alice).post(SEARCH, {"query": "빈집 안내", "top_k": 5}, format="json").json()["results"]
    assert {h["document_id"] for h in hits} == {public_doc.pk, private_doc.pk}
    assert len(client_for(staff).get(f"{UPLOAD}?status=indexed").json()["results"]) == 2


def test_search_returns_ranked_chunks_with_citation_metadata(alice, collection):
    subsidy = document_upload(
        collection=collection,
        filename="s.txt",
        data="철거 보조금은 한 동당 최대 1,500만 원까지 지원됩니다.".encode(),
        source="시청",
        category="보조금",
    ).document
    document_upload(
        collection=collection, filename="t.txt", data="취득세는 최대 50% 감면됩니다.".encode(), category="세제"
    )
    response = client_for(alice).post(
        SEARCH, {"query": "철거 보조금 금액", "top_k": 2, "category": "보조금", "rerank": False}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["backend"] == "local" and body["took_ms"] >= 0
    [hit] = body["results"]
    assert hit["document_id"] == subsidy.pk and hit["collection_id"] == collection.pk
    assert hit["title"] == "s" and hit["source"] == "시청" and hit["category"] == "보조금" and hit["language"] == "ko"
    assert hit["url"] == f"http://testserver/knowledge/documents/{subsidy.pk}/"
    assert hit["score"] > 0 and "1,500만 원" in hit["text"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"query": ""},
        {"query": "빈집", "top_k": 0},
        {"query": "빈집", "top_k": 10_000},
        {"query": "빈집", "date_from": "어제"},
    ],
)
def test_bad_search_input_is_a_400(alice, payload):
    response = client_for(alice).post(SEARCH, payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request" and response.json()["error"]["fields"]


def test_update_metadata_and_replace_the_file(staff, collection):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 실태조사 안내".encode()).document
    client = client_for(staff)
    response = client.patch(f"{UPLOAD}{document.pk}/", {"title": "실태조사", "category": "조사"}, format="json")
    assert response.status_code == 202 and response.json()["title"] == "실태조사"
    hit = client.post(SEARCH, {"query": "빈집 실태조사"}, format="json").json()["results"][0]
    assert (hit["title"], hit["category"]) == ("실태조사", "조사")  # the index copy was refreshed

    new_file = SimpleUploadedFile("b.md", "# 안전조치\n\n붕괴 위험 빈집의 안전조치 명령".encode())
    response = client.patch(f"{UPLOAD}{document.pk}/", {"file": new_file}, format="multipart")
    assert response.status_code == 202
    assert response.json()["original_filename"] == "b.md" and response.json()["status"] == "indexed"
    texts = [h["text"] for h in client.post(SEARCH, {"query": "안전조치 명령"}, format="json").json()["results"]]
    assert any("붕괴 위험" in t for t in texts) and not any("실태조사 안내" in t for t in texts)


def test_delete_removes_the_document_everywhere(staff, alice, collection, media_files):
    document = document_upload(collection=collection, filename="a.txt", data="빈집 철거 안내".encode()).document
    assert client_for(alice).delete(f"{UPLOAD}{document.pk}/").status_code == 403
    assert client_for(staff).delete(f"{UPLOAD}{document.pk}/").status_code == 204
    assert not Document.objects.filter(pk=document.pk).exists()
    assert document.pk not in get_search_backend().document_chunk_counts()
    assert media_files() == []
    assert client_for(staff).delete(f"{UPLOAD}{document.pk}/").status_code == 404


def test_the_citation_page_follows_collection_access(client, alice, collection, private_collection):
    public_doc = document_upload(collection=collection, filename="p.txt", data="공개 빈집 안내문".encode()).document
    private_doc = document_upload(
        collection=private_collection, filename="s.txt", data="비공개 안내문".encode()
    ).document
    page = client.get(f"/knowledge/documents/{public_doc.pk}/")
    assert page.status_code == 200 and "공개 빈집 안내문" in page.content.decode()
    assert client.get(f"/knowledge/documents/{private_doc.pk}/").status_code == 404
    client.force_login(alice)
    private_collection.readers.add(alice)
    assert client.get(f"/knowledge/documents/{private_doc.pk}/").status_code == 200


def test_the_openapi_schema_describes_the_knowledge_api(staff):
    schema = client_for(staff).get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert {"/api/knowledge/documents/", "/api/knowledge/documents/{id}/", "/api/knowledge/search/"} <= set(paths)
    assert "multipart/form-data" in paths["/api/knowledge/documents/"]["post"]["requestBody"]["content"]


def test_a_principal_speaking_for_a_user_reads_what_the_user_reads(alice, collection, private_collection):
    from dataclasses import dataclass

    from knowledge.selectors import readable_collection_ids, register_principal_resolver, writable_collections

    @dataclass(frozen=True)
    class KeyPrincipal:  # the shape of an API-key principal: speaks for a user
        user_id: int

    private_collection.readers.add(alice)
    key = KeyPrincipal(alice.pk)
    assert readable_collection_ids(key) == (collection.pk, private_collection.pk)
    assert list(writable_collections(key)) == []
    assert readable_collection_ids(KeyPrincipal(10**9)) == (collection.pk,)  # unknown user: public only

    from knowledge import selectors

    def only_public(principal, access):
        return [collection.pk] if isinstance(principal, KeyPrincipal) else None

    register_principal_resolver(only_public)
    try:
        assert readable_collection_ids(key) == (collection.pk,)
    finally:
        selectors._resolvers.remove(only_public)
