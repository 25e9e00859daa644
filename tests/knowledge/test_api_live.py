"""The knowledge API for integrators over a live server: API keys and scopes, owners' grants,
collections, idempotent sync by external id, jobs, and deletes that leave search at once.

Real sockets to the production ASGI app (uvicorn), PostgreSQL, Elasticsearch and Triton.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from django.contrib.auth.models import Permission

from knowledge.models import Chunk, Document, Job
from tests.knowledge.conftest import api_key

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

API = "/api/knowledge"


def client(live, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"{live.url}{API}", headers=headers, timeout=60)


def unique(prefix: str) -> str:
    """A word no other document holds, so a search for it finds exactly the documents that have it."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="pw", is_staff=True, is_superuser=True)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw")


def grant_writer(user) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_document", "add_collection"]))


def test_a_key_without_knowledge_scopes_cannot_read(knowledge_live, staff):
    chat_only = client(knowledge_live, api_key(staff, "chat"))
    for response in (
        chat_only.get("/collections/"),
        chat_only.get("/documents/"),
        chat_only.post("/search/", json={"query": "빈집"}),
        chat_only.get("/jobs/1/"),
    ):
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["reason"] == "missing_scope" and error["scope"] == "knowledge:read"
        assert "knowledge:read" in error["message"]

    anonymous = client(knowledge_live).get("/collections/")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.json()["error"]["code"] == "authentication_required"
    malformed = client(knowledge_live, "vhk_nope").get("/collections/")
    assert malformed.status_code == 401 and malformed.json()["error"]["code"] == "malformed_key"
    unknown = client(knowledge_live, "vhk_abcdefgh_" + "x" * 43).get("/collections/")
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "unknown_key"


def test_a_read_only_key_cannot_write(knowledge_live, staff):
    writer = client(knowledge_live, api_key(staff, "knowledge:write"))
    created = writer.post("/collections/", json={"name": "읽기 전용 시험", "slug": "read-only-test"})
    assert created.status_code == 201, created.text
    synced = writer.put("/collections/read-only-test/documents/by-external-id/doc-1/", json={"text": "빈집 안내문"})
    assert synced.status_code == 201, synced.text
    document_id = synced.json()["document"]["id"]

    reader = client(knowledge_live, api_key(staff, "knowledge:read"))
    assert reader.get("/collections/read-only-test/").json()["document_count"] == 1
    assert reader.get(f"/documents/{document_id}/").status_code == 200
    assert reader.post("/search/", json={"query": "빈집 안내문"}).status_code == 200
    for response in (
        reader.post("/collections/", json={"name": "또 하나"}),
        reader.patch("/collections/read-only-test/", json={"description": "x"}),
        reader.delete("/collections/read-only-test/"),
        reader.put("/collections/read-only-test/documents/by-external-id/doc-2/", json={"text": "새 문서"}),
        reader.post("/documents/", json={"collection": "read-only-test", "text": "새 문서"}),
        reader.patch(f"/documents/{document_id}/", json={"title": "x"}),
        reader.post(f"/documents/{document_id}/reindex/"),
        reader.delete(f"/documents/{document_id}/"),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["scope"] == "knowledge:write"
    assert Document.objects.count() == 1 and Document.objects.get().title == synced.json()["document"]["title"]


def test_a_key_sees_only_its_owners_collections(knowledge_live, staff, alice, bob):
    admin = client(knowledge_live, api_key(staff, "knowledge:write"))
    word = unique("grant")
    for slug, public in (("everyone", True), ("alices", False), ("bobs", False)):
        assert admin.post("/collections/", json={"name": slug, "slug": slug, "is_public": public}).status_code == 201
        response = admin.put(f"/collections/{slug}/documents/by-external-id/d/", json={"text": f"{word} {slug} 문서"})
        assert response.status_code == 201, response.text
    from knowledge.models import Collection

    Collection.objects.get(slug="alices").readers.add(alice)
    Collection.objects.get(slug="bobs").readers.add(bob)
    bobs_document = Document.objects.get(collection__slug="bobs")

    alice_key = client(knowledge_live, api_key(alice, "knowledge:read", "knowledge:write"))
    assert sorted(c["slug"] for c in alice_key.get("/collections/").json()) == ["alices", "everyone"]
    assert {d["collection"] for d in alice_key.get("/documents/").json()["results"]} == {"alices", "everyone"}
    assert alice_key.get(f"/documents/{bobs_document.pk}/").status_code == 404
    assert alice_key.get("/collections/bobs/").status_code == 404
    assert alice_key.get("/collections/bobs/documents/by-external-id/d/").status_code == 404
    job = Job.objects.filter(document=bobs_document).first()
    assert alice_key.get(f"/jobs/{job.pk}/").status_code == 404
    hits = alice_key.post("/search/", json={"query": word, "top_k": 10, "rerank": False}).json()["results"]
    assert {h["collection_id"] for h in hits} == set(
        Collection.objects.filter(slug__in=["alices", "everyone"]).values_list("pk", flat=True)
    )
    assert alice_key.post("/search/", json={"query": word, "collections": ["bobs"]}).status_code == 400

    # Writing follows the owner's rights too: a grant is not enough without the model permission...
    refused = alice_key.put("/collections/alices/documents/by-external-id/new/", json={"text": "앨리스의 새 문서"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    grant_writer(alice)
    ok = alice_key.put("/collections/alices/documents/by-external-id/new/", json={"text": "앨리스의 새 문서"})
    assert ok.status_code == 201, ok.text
    # ...and the permission is not enough without a grant (public is readable, not writable).
    public = alice_key.put("/collections/everyone/documents/by-external-id/new/", json={"text": "공개 문서"})
    assert public.status_code == 403
    # A collection she creates is hers (granted), not staff's business to grant afterwards.
    mine = alice_key.post("/collections/", json={"name": "앨리스 자료", "slug": "alice-own"})
    assert mine.status_code == 201 and Collection.objects.get(slug="alice-own").readers.filter(pk=alice.pk).exists()
    assert alice_key.delete("/collections/alices/").status_code == 403  # no delete_collection permission


def test_sync_by_external_id_queues_no_job_for_the_same_bytes_and_replaces_changed_ones(
    knowledge_live, staff, live_index
):
    api = client(knowledge_live, api_key(staff, "knowledge:read", "knowledge:write"))
    assert api.post("/collections/", json={"name": "동기화", "slug": "sync"}).status_code == 201
    old_word, new_word = unique("old"), unique("new")
    url = "/collections/sync/documents/by-external-id/policy:2025/001.md/"
    assert api.put(url, json={"text": "x"}).status_code == 404  # '/' is not part of an id (one path segment)
    url = "/collections/sync/documents/by-external-id/policy:2025:001.md/"
    body = {"text": f"# 빈집 정비\n\n{old_word} 빈집 정비 지원은 최대 2천만 원입니다.", "format": "markdown"}

    first = api.put(url, json={**body, "title": "정비 지원", "category": "지원"})
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["created"] is True and created["changed"] is True and created["job_id"]
    document = created["document"]
    assert document["external_id"] == "policy:2025:001.md" and document["status"] == "indexed"
    assert document["latest_job"]["id"] == created["job_id"]
    job = api.get(f"/jobs/{created['job_id']}/").json()
    assert (job["status"], job["progress"], job["kind"], job["document_id"]) == ("done", 100, "ingest", document["id"])
    assert job["finished_at"] and job["started_at"] and job["created_at"] and job["error"] == ""
    old_chunks = set(Chunk.objects.filter(document_id=document["id"]).values_list("pk", flat=True))
    assert old_chunks and live_index.document_chunk_counts().get(document["id"]) == len(old_chunks)

    jobs_before = Job.objects.count()
    again = api.put(url, json={**body, "title": "정비 지원"})  # same bytes, same metadata (omitted: kept)
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["changed"], again.json()["job_id"]) == (False, False, None)
    assert Job.objects.count() == jobs_before
    assert Document.objects.count() == 1

    # The same bytes uploaded as a file, or sent as text, never make a second document.
    upload = api.post(
        "/documents/",
        data={"collection": "sync"},
        files={"files": ("copy.md", body["text"].encode(), "text/markdown")},
    )
    assert upload.status_code == 200 and upload.json()[0]["created"] is False
    assert upload.json()[0]["document"]["id"] == document["id"]
    assert Document.objects.count() == 1 and Job.objects.count() == jobs_before

    new_body = {
        "text": f"# 빈집 정비\n\n{new_word} 빈집 정비 지원은 최대 3천만 원으로 늘었습니다.",
        "format": "markdown",
    }
    replaced = api.put(url, json=new_body)
    assert replaced.status_code == 202, replaced.text
    assert replaced.json()["created"] is False and replaced.json()["changed"] is True
    assert replaced.json()["document"]["id"] == document["id"]
    assert replaced.json()["document"]["title"] == "정비 지원"  # omitted metadata kept
    assert api.get(f"/jobs/{replaced.json()['job_id']}/").json()["status"] == "done"
    new_chunks = set(Chunk.objects.filter(document_id=document["id"]).values_list("pk", flat=True))
    assert new_chunks and not (new_chunks & old_chunks)
    assert live_index.document_chunk_counts().get(document["id"]) == len(new_chunks)
    hits = api.post("/search/", json={"query": old_word, "top_k": 10, "rerank": False}).json()["results"]
    assert not any(old_word in h["text"] for h in hits)  # the old chunks left the index
    assert not ({h["chunk_id"] for h in hits} & old_chunks)
    hits = api.post("/search/", json={"query": new_word, "top_k": 3, "rerank": False}).json()["results"]
    assert new_word in hits[0]["text"] and hits[0]["document_id"] == document["id"]

    # Metadata alone: a re-index job (the index holds a copy), no re-ingestion.
    retitled = api.put(url, json={**new_body, "title": "정비 지원 (개정)"})
    assert retitled.status_code == 202 and Job.objects.get(pk=retitled.json()["job_id"]).kind == "reindex_document"
    hit = api.post("/search/", json={"query": new_word, "top_k": 1}).json()["results"][0]
    assert hit["title"] == "정비 지원 (개정)"


def test_delete_removes_the_document_from_search_at_once(knowledge_live, staff, live_index):
    api = client(knowledge_live, api_key(staff, "knowledge:write"))
    assert api.post("/collections/", json={"name": "삭제", "slug": "delete-me"}).status_code == 201
    word = unique("gone")
    for external_id in ("a", "b"):
        response = api.put(
            f"/collections/delete-me/documents/by-external-id/{external_id}/",
            json={"text": f"{word} 빈집 철거 보조금 안내 {external_id}"},
        )
        assert response.status_code == 201, response.text
    a = Document.objects.get(external_id="a")
    assert {h["document_id"] for h in api.post("/search/", json={"query": word}).json()["results"]} == {
        a.pk,
        Document.objects.get(external_id="b").pk,
    }

    assert api.delete("/collections/delete-me/documents/by-external-id/a/").status_code == 204
    hits = api.post("/search/", json={"query": word}).json()["results"]  # no wait, no refresh
    assert a.pk not in {h["document_id"] for h in hits} and hits
    assert a.pk not in live_index.document_chunk_counts()
    assert api.get(f"/documents/{a.pk}/").status_code == 404

    b = Document.objects.get(external_id="b")
    assert api.delete(f"/documents/{b.pk}/").status_code == 204
    assert api.post("/search/", json={"query": word}).json()["results"] == []

    assert api.put("/collections/delete-me/documents/by-external-id/c/", json={"text": f"{word} 셋"}).status_code == 201
    assert api.delete("/collections/delete-me/").status_code == 204  # with its documents
    assert api.post("/search/", json={"query": word}).json()["results"] == []
    assert not Document.objects.exists()


def test_collections_and_documents_over_rest(knowledge_live, staff):
    api = client(knowledge_live, api_key(staff, "knowledge:write"))
    created = api.post("/collections/", json={"name": "빈집 지원 2026", "description": "연간 지원 사업"})
    assert created.status_code == 201, created.text
    collection = created.json()
    assert collection["slug"] == "빈집-지원-2026" and collection["document_count"] == 0
    duplicate = api.post("/collections/", json={"name": "빈집 지원 2026"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "collection_exists"
    assert api.post("/collections/", json={"name": ""}).json()["error"]["fields"]["name"]

    changed = api.patch(f"/collections/{collection['id']}/", json={"is_public": True, "description": "공개"})
    assert changed.status_code == 200 and changed.json()["is_public"] is True

    text = api.post("/documents/", json={"collection": collection["id"], "text": "# 안내\n\n빈집 신고 방법", "format": "markdown", "title": "신고 안내"})  # fmt: skip
    assert text.status_code == 202, text.text
    [result] = text.json()
    assert result["document"]["file_type"] == "md" and result["document"]["title"] == "신고 안내"
    files = api.post(
        "/documents/",
        data={"collection": collection["slug"], "category": "서식"},
        files=[
            ("files", ("a.txt", "빈집 철거 신청서".encode(), "text/plain")),
            ("files", ("b.txt", "빈집 정비 계획서".encode(), "text/plain")),
        ],
    )
    assert files.status_code == 202 and [r["created"] for r in files.json()] == [True, True]

    listed = api.get("/documents/", params={"collection": collection["slug"], "category": "서식", "limit": 1})
    page = listed.json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]
    assert api.get("/documents/", params={"limit": 500}).status_code == 400  # bounded pages
    assert api.get("/documents/", params={"status": "bogus"}).json()["error"]["fields"]["status"]
    since = page["results"][0]["updated_at"]
    assert api.get("/documents/", params={"updated_since": since, "collection": collection["id"]}).json()["count"] >= 1
    assert api.get("/documents/", params={"updated_since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    assert api.get("/collections/").json()[0]["document_count"] == 3

    document_id = result["document"]["id"]
    patched = api.patch(f"/documents/{document_id}/", json={"source": "시청", "external_id": "notice-1"})
    assert patched.status_code == 202 and patched.json()["external_id"] == "notice-1"
    assert api.get(f"/collections/{collection['slug']}/documents/by-external-id/notice-1/").json()["id"] == document_id
    other = files.json()[0]["document"]["id"]
    taken = api.patch(f"/documents/{other}/", json={"external_id": "notice-1"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "duplicate_external_id"
    reindex = api.post(f"/documents/{document_id}/reindex/")
    assert reindex.status_code == 202 and reindex.json()["kind"] == "reindex_document"
    assert api.get(f"/documents/{document_id}/").json()["latest_job"]["id"] == reindex.json()["id"]
    replaced = api.patch(f"/documents/{document_id}/", files={"file": ("new.txt", "빈집 신고 새 방법".encode())})
    assert replaced.status_code == 202 and replaced.json()["original_filename"] == "new.txt"
    assert api.get(f"/documents/{document_id}/").json()["chunk_count"] == 1

    bad = api.post("/documents/", json={"collection": collection["id"], "text": "   "})
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["text"]
    assert api.put(f"/collections/{collection['id']}/documents/by-external-id/.hidden/", json={"text": "x"}).status_code == 400  # fmt: skip
    assert api.get("/documents/999999/").status_code == 404
