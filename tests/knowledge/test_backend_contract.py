"""ONE contract for every search backend: the same tests, subclassed per backend.

A class-scoped corpus (Korean and English documents in txt, md, html, pdf and docx,
in a public and a private collection) is ingested once per backend through the
real pipeline (parsing, chunking, embedding through inference, indexing) and
committed, so that the reindex thread sees it; each test runs in a transaction
that is rolled back, and removes from the index whatever it added.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import pytest
from django.db import connections
from django.test import override_settings
from prometheus_client import REGISTRY

from knowledge.errors import CorruptFile, EmptyFile, UnsupportedFileType
from knowledge.models import Chunk, Collection, Document, Job
from knowledge.search import get_search_backend, reset_backends
from knowledge.services import (
    collection_create,
    collection_delete,
    document_delete,
    document_replace_file,
    document_upload,
    index_rebuild,
    retrieve_sync,
)
from knowledge.types import SearchFilters
from tests.knowledge.conftest import SESSION_ALIAS, backend_settings
from tests.knowledge.files import make_docx, make_pdf
from tests.knowledge.partial_shards import PartialShards

KST = dt.timezone(dt.timedelta(hours=9))

# (key, collection, filename, content, metadata)
CORPUS = [
    (
        "ko_txt", "public", "subsidy.txt",
        "빈집 철거 보조금 안내\n\n철거 보조금은 주택 한 동당 최대 1,500만 원까지 지원됩니다. "
        "슬레이트 지붕 처리비는 최대 700만 원을 별도로 지원합니다.",
        {"category": "보조금", "source": "시청 건축과", "timestamp": dt.datetime(2025, 2, 3, tzinfo=KST)},
    ),
    (
        "ko_md", "public", "survey.md",
        "# 빈집 실태조사\n\n시장·군수·구청장은 5년마다 빈집 실태조사를 실시합니다. "
        "조사원은 전기와 상수도 사용량을 확인한 뒤 현장을 방문합니다.",
        {"category": "실태조사", "source": "도시재생과", "timestamp": dt.datetime(2024, 11, 20, tzinfo=KST)},
    ),
    (
        "ko_html", "public", "safety.html",
        "<html><head><title>안전조치 명령</title></head><body><h1>안전조치 명령</h1>"
        "<p>붕괴 위험이 있는 빈집의 소유자에게 시장은 안전조치를 명령할 수 있습니다.</p>"
        "<p>명령을 따르지 않으면 이행강제금이 부과됩니다.</p><script>var x = 1;</script></body></html>",
        {"category": "안전조치", "source": "건축안전과", "timestamp": dt.datetime(2025, 4, 1, tzinfo=KST)},
    ),
    (
        "ko_pdf", "public", "tax.pdf",
        ["빈집 세제 혜택", "빈집은행을 통해 빈집을 사서 직접 거주하면 취득세를 최대 50% 감면받을 수 있습니다.",
         "3년 안에 팔면 감면된 세액이 추징됩니다."],
        {"category": "세제", "source": "세무과", "timestamp": dt.datetime(2024, 12, 5, tzinfo=KST)},
    ),
    (
        "ko_docx", "private", "lease.docx",
        ["소유자가 빈집을 5년 이상 임대하기로 약정하면 리모델링 비용을 최대 2,000만 원까지 지원합니다.",
         "리모델링한 주택은 청년과 신혼부부에게 시세의 절반 이하 임대료로 공급됩니다."],
        {"category": "임대", "source": "도시재생과", "timestamp": dt.datetime(2025, 3, 10, tzinfo=KST)},
    ),
    (
        "en_md", "public", "overview.md",
        "# Demolition subsidy overview\n\nAn owner can receive up to 15 million won per house to demolish "
        "a vacant house. The land must stay in public use for at least three years.",
        {"category": "overview", "source": "district office", "timestamp": dt.datetime(2025, 5, 1, tzinfo=KST)},
    ),
    (
        "en_pdf", "private", "interpreter.pdf",
        ["Foreign residents", "Foreign owners of a vacant house can apply in English;",
         "the district office arranges an interpreter for the site inspection."],
        {"category": "overview", "source": "district office", "timestamp": dt.datetime(2025, 6, 1, tzinfo=KST)},
    ),
]  # fmt: skip


def _file_bytes(filename: str, content) -> bytes:
    if filename.endswith(".pdf"):
        return make_pdf(content)
    if filename.endswith(".docx"):
        return make_docx(content)
    return content.encode("utf-8")


@dataclass
class World:
    backends: dict
    public: Collection
    private: Collection
    docs: dict[str, Document]


class BackendContract:
    backend: str = ""
    analyzer: str | None = None  # Elasticsearch: the ES_ANALYZER of the index (None: auto)

    @pytest.fixture(scope="class")
    @classmethod
    def world(cls, django_db_setup, django_db_blocker, tmp_path_factory):
        label = f"{cls.backend}-{cls.analyzer}" if cls.analyzer else cls.backend
        backends = backend_settings(alias=f"{SESSION_ALIAS}-{label}")
        if cls.analyzer:
            backends["elasticsearch"]["ANALYZER"] = cls.analyzer
        media = tmp_path_factory.mktemp(f"media-{label}")
        with (
            django_db_blocker.unblock(),
            override_settings(
                SEARCH_BACKEND=cls.backend, SEARCH_BACKENDS=backends, KNOWLEDGE_JOBS_INLINE=True, MEDIA_ROOT=media
            ),
        ):
            reset_backends()
            get_search_backend().reset_index()
            public = collection_create(name=f"공개 {label}", slug=f"public-{label}", is_public=True)
            private = collection_create(name=f"비공개 {label}", slug=f"private-{label}")
            docs = {}
            for key, where, filename, content, meta in CORPUS:
                result = document_upload(
                    collection=public if where == "public" else private,
                    filename=filename,
                    data=_file_bytes(filename, content),
                    **meta,
                )
                docs[key] = result.document
                assert result.document.status == Document.Status.INDEXED, (key, result.document.error)
            try:
                yield World(backends, public, private, docs)
            finally:
                Job.objects.filter(document__collection__in=[public, private]).delete()
                for c in (public, private):
                    collection_delete(collection=c)
                for name in get_search_backend().list_indexes():
                    get_search_backend().delete_index(name)
                reset_backends()

    @pytest.fixture(autouse=True)
    def _use_backend(self, world, settings):
        settings.SEARCH_BACKEND = self.backend
        settings.SEARCH_BACKENDS = world.backends
        reset_backends()

    def ids(self, results) -> list[int]:
        return [r.chunk.document_id for r in results]

    # --- ingestion --------------------------------------------------------------------

    def test_every_format_is_ingested_with_metadata(self, world):
        for key, doc in world.docs.items():
            doc.refresh_from_db()
            assert doc.status == Document.Status.INDEXED and doc.chunk_count >= 1, key
            assert doc.language == ("en" if key.startswith("en") else "ko"), key
            chunk = doc.chunks.first()
            assert len(chunk.vector) == get_search_backend().info().embedding_dim
        assert "이행강제금" in world.docs["ko_html"].chunks.first().text
        assert "var x" not in "".join(world.docs["ko_html"].chunks.values_list("text", flat=True))
        assert "취득세" in world.docs["ko_pdf"].chunks.first().text

    def test_index_matches_database(self, world):
        info = get_search_backend().info()
        assert info.concrete_index and info.concrete_index.startswith(info.alias + "-v")
        assert info.chunk_count == Chunk.objects.filter(document__collection__in=[world.public, world.private]).count()
        counts = get_search_backend().document_chunk_counts()
        assert counts == {
            d.pk: d.chunk_count for d in Document.objects.filter(pk__in=[d.pk for d in world.docs.values()])
        }

    # --- retrieval --------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("question", "key"),
        [
            ("철거 보조금은 한 동당 최대 얼마까지 받을 수 있나요?", "ko_txt"),
            ("빈집 실태조사는 몇 년마다 하나요?", "ko_md"),
            ("안전조치 명령을 따르지 않으면 어떻게 되나요?", "ko_html"),
            ("빈집을 사면 취득세를 감면받을 수 있나요?", "ko_pdf"),
            ("리모델링 비용 지원을 받으려면 몇 년 임대해야 하나요?", "ko_docx"),
            ("How much money can I get to demolish a vacant house?", "en_md"),
        ],
    )
    def test_the_answering_passage_ranks_in_the_top_3(self, world, question, key):
        results = retrieve_sync(question, top_k=3, rerank=False)
        assert world.docs[key].pk in self.ids(results), [(r.chunk.title, r.score) for r in results]
        hit = next(r for r in results if r.chunk.document_id == world.docs[key].pk)
        assert hit.url.endswith(f"/documents/{hit.chunk.document_id}/")
        assert hit.chunk.collection_id == world.docs[key].collection_id and hit.chunk.text

    def test_rerank_keeps_the_answer_in_the_top_3(self, world):
        results = retrieve_sync("철거 보조금은 한 동당 최대 얼마까지 받을 수 있나요?", top_k=3, rerank=True)
        assert world.docs["ko_txt"].pk in self.ids(results)

    async def test_async_retrieve_on_the_running_loop(self, world):
        from asgiref.sync import sync_to_async

        from knowledge.services import retrieve

        try:
            results = await retrieve("빈집 실태조사 주기", top_k=3, rerank=False)
        finally:
            # The local backend read the database from asgiref's sync thread: close that connection.
            await sync_to_async(connections.close_all)()
        assert world.docs["ko_md"].pk in self.ids(results)

    def test_filters_narrow_results(self, world):
        question = "빈집 지원 금액"
        only_private = retrieve_sync(question, filters=SearchFilters(collection_ids=(world.private.pk,)), top_k=10)
        assert only_private and {r.chunk.collection_id for r in only_private} == {world.private.pk}

        by_category = retrieve_sync(question, filters=SearchFilters(category="세제"), top_k=10)
        assert by_category and set(self.ids(by_category)) == {world.docs["ko_pdf"].pk}

        by_source = retrieve_sync(question, filters=SearchFilters(source="도시재생과"), top_k=10)
        assert set(self.ids(by_source)) == {world.docs["ko_md"].pk, world.docs["ko_docx"].pk}

        window = SearchFilters(
            collection_ids=(world.public.pk, world.private.pk),
            date_from=dt.datetime(2025, 1, 1, tzinfo=KST),
            date_to=dt.datetime(2025, 3, 31, tzinfo=KST),
        )
        in_window = retrieve_sync(question, filters=window, top_k=10)
        assert set(self.ids(in_window)) == {world.docs["ko_txt"].pk, world.docs["ko_docx"].pk}

        nothing = retrieve_sync(question, filters=SearchFilters(collection_ids=()), top_k=10)
        assert nothing == []

    async def test_readiness_probe_and_metrics(self, world):
        from asgiref.sync import sync_to_async
        from prometheus_client import REGISTRY

        from knowledge.services import retrieve

        name = get_search_backend().name
        labels = {"stage": "total", "backend": name}
        before = REGISTRY.get_sample_value("retrieval_duration_seconds_count", labels) or 0
        try:
            assert await get_search_backend().ping()
            await retrieve("빈집", top_k=1, rerank=False)
        finally:
            await sync_to_async(connections.close_all)()
        assert REGISTRY.get_sample_value("retrieval_duration_seconds_count", labels) == before + 1
        assert REGISTRY.get_sample_value("retrieval_duration_seconds_count", {"stage": "search", "backend": name})

    def test_english_and_korean_share_one_index(self, world):
        results = retrieve_sync("interpreter for foreign owners", top_k=3)
        assert self.ids(results)[0] == world.docs["en_pdf"].pk

    # --- writes ---------------------------------------------------------------------

    def test_reupload_of_the_same_bytes_adds_nothing(self, world):
        _, _, filename, content, _meta = CORPUS[0]
        before = Chunk.objects.count(), get_search_backend().info().chunk_count
        again = document_upload(collection=world.public, filename="copy.txt", data=_file_bytes(filename, content))
        assert again.created is False and again.document.pk == world.docs["ko_txt"].pk
        assert (Chunk.objects.count(), get_search_backend().info().chunk_count) == before

    def test_update_replaces_chunks_in_db_and_index_and_delete_removes_them(self, world, committed):
        question = "빈집 고양이 급식소 설치 지원"
        with committed():
            result = document_upload(
                collection=world.public,
                filename="cats.md",
                data="# 고양이\n\n빈집 마당에 고양이 급식소를 설치하면 지원합니다.".encode(),
            )
        doc = result.document
        doc.refresh_from_db()
        try:
            assert doc.status == Document.Status.INDEXED
            assert doc.pk in self.ids(retrieve_sync(question, top_k=3))
            old_chunk_ids = set(doc.chunks.values_list("pk", flat=True))

            with committed():
                document_replace_file(
                    document=doc,
                    filename="cats.md",
                    data="# 텃밭\n\n철거한 빈집 터에 주민 공동 텃밭을 만들면 흙과 모종을 지원합니다.".encode(),
                )
            doc.refresh_from_db()
            assert doc.status == Document.Status.INDEXED
            new_chunks = list(doc.chunks.all())
            assert old_chunk_ids.isdisjoint(c.pk for c in new_chunks)
            assert get_search_backend().document_chunk_counts().get(doc.pk) == len(new_chunks)
            hits = retrieve_sync("주민 공동 텃밭 모종 지원", top_k=3)
            assert doc.pk in self.ids(hits)
            assert all("고양이" not in r.chunk.text for r in hits if r.chunk.document_id == doc.pk)
        finally:
            document_delete(document=doc)
        assert not Document.objects.filter(pk=doc.pk).exists()
        assert doc.pk not in get_search_backend().document_chunk_counts()
        assert doc.pk not in self.ids(retrieve_sync("주민 공동 텃밭 모종 지원", top_k=10))

    def test_a_corrupt_file_fails_cleanly(self, world, committed):
        documents, chunks, jobs = Document.objects.count(), Chunk.objects.count(), Job.objects.count()
        indexed = get_search_backend().info().chunk_count
        for filename, data, error in [
            ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", CorruptFile),
            ("broken.docx", b"PK\x03\x04 not really a zip", CorruptFile),
            ("empty.txt", b"   \n", EmptyFile),
            ("image.png", b"\x89PNG\r\n\x1a\n", UnsupportedFileType),
        ]:
            with pytest.raises(error):
                document_upload(collection=world.public, filename=filename, data=data)
        assert (Document.objects.count(), Chunk.objects.count(), Job.objects.count()) == (documents, chunks, jobs)
        assert get_search_backend().info().chunk_count == indexed

        # Opens fine but holds no text: found by the background job, recorded on the document.
        with committed():
            blank = document_upload(collection=world.public, filename="blank.pdf", data=make_pdf([" "]))
        blank.document.refresh_from_db()
        try:
            assert blank.document.status == Document.Status.FAILED
            assert "no_text" in blank.document.error
            assert blank.document.chunks.count() == 0
            assert blank.document.pk not in get_search_backend().document_chunk_counts()
            assert Job.objects.get(pk=blank.job.pk).status == Job.Status.FAILED
        finally:
            document_delete(document=blank.document)

    def test_korean_particles_do_not_split_a_word_from_itself(self, world):
        """이행강제금이 (in the document) is found by 이행강제금은 and 이행강제금을: never the standard analyzer."""
        for question in ("이행강제금은", "이행강제금을 내야 하나요"):
            hits = retrieve_sync(question, top_k=3, mode="lexical")
            assert world.docs["ko_html"].pk in self.ids(hits), (question, [h.chunk.title for h in hits])

    def test_a_place_named_in_hangul_finds_its_english_document(self, world, committed):
        """해담시 in a Korean question, "Haedam City" in an English document: the cross-script names list."""
        with committed():
            result = document_upload(
                collection=world.public,
                filename="haedam.md",
                data=b"# Haedam City repair grant\n\nHaedam City pays 70% of the repair cost of an empty home.",
            )
        doc = result.document
        try:
            assert doc.pk in self.ids(retrieve_sync("해담시 빈집 수리비 지원은요?", top_k=3))
        finally:
            document_delete(document=doc)

    # --- index management -------------------------------------------------------------

    def test_search_keeps_answering_during_reindex(self, world):
        if self.backend == "local" and connections["default"].vendor == "sqlite":
            pytest.skip("SQLite has one writer and the test transaction holds it; runs on PostgreSQL")
        backend = get_search_backend()
        before = backend.info().concrete_index
        failures: list[BaseException] = []

        def rebuild() -> None:
            try:
                # One chunk per batch and a pause after each: a small corpus rebuilds as
                # slowly as a big one would, so searches overlap every phase of the build.
                index_rebuild(batch_size=1, on_batch=lambda n: time.sleep(0.1))
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=rebuild)
        answered = missed = during = 0
        thread.start()
        while thread.is_alive() or answered < 5:
            results = retrieve_sync("빈집 실태조사는 몇 년마다 하나요?", top_k=3, rerank=False)
            if world.docs["ko_md"].pk in self.ids(results):
                answered += 1
            else:
                missed += 1
            during += thread.is_alive()
            time.sleep(0.005)
        thread.join()
        assert not failures, failures
        assert missed == 0 and answered >= 5
        assert during >= 1, "no search ran while the reindex was running"
        info = backend.info()
        assert info.concrete_index != before and info.other_indexes == []
        assert info.chunk_count == Chunk.objects.filter(document__collection__in=[world.public, world.private]).count()


class TestLocalBackend(BackendContract):
    backend = "local"
    pytestmark = [pytest.mark.fast, pytest.mark.django_db]


def _partial_count(search: str, after_retry: str) -> float:
    labels = {"search": search, "after_retry": after_retry}
    return REGISTRY.get_sample_value("knowledge_search_partial_total", labels) or 0.0


class TestElasticsearchBackend(BackendContract):
    backend = "elasticsearch"
    pytestmark = [pytest.mark.services, pytest.mark.django_db]

    def test_analyzer_is_detected_and_recorded(self, world):
        backend = get_search_backend()
        info = backend.info()
        assert info.analyzer == backend.detect_analyzer()  # nori where installed, else char-bigram
        assert info.analyzer in ("nori", "char-bigram")
        assert info.extra["shards"] == 1 and info.extra["replicas"] == 0
        mapping = backend.client.indices.get_mapping(index=info.concrete_index)[info.concrete_index]["mappings"]
        assert mapping["properties"]["embedding"]["similarity"] == "cosine"
        assert mapping["properties"]["metadata"]["properties"]["category"]["type"] == "keyword"

    def test_engine_outage_is_a_typed_error(self, world, settings):
        from knowledge.errors import SearchUnavailable

        broken = {**world.backends, "elasticsearch": {**world.backends["elasticsearch"]}}
        broken["elasticsearch"].update(URLS=["http://127.0.0.1:9"], TIMEOUT=1, MAX_RETRIES=0)
        settings.SEARCH_BACKENDS = broken
        reset_backends()
        started = time.perf_counter()
        with pytest.raises(SearchUnavailable):
            retrieve_sync("빈집", top_k=3)
        assert time.perf_counter() - started < 5

    def test_a_search_a_shard_failed_once_is_made_again_and_whole(self, world, settings):
        """As a search is while a node dies (tests/topology kills one): partial once, then whole."""
        es = world.backends["elasticsearch"]
        with PartialShards(es["URLS"][0], spoil=1) as proxy:
            settings.SEARCH_BACKENDS = {**world.backends, "elasticsearch": {**es, "URLS": [proxy.url]}}
            reset_backends()
            before = _partial_count("search", "whole")
            results = retrieve_sync("철거 보조금은 얼마까지?", top_k=3)
        assert proxy.spoiled == 1 and proxy.matching == 2  # partial, then made again
        assert self.ids(results)[0] == world.docs["ko_txt"].pk
        assert _partial_count("search", "whole") == before + 1

    def test_a_search_whose_shards_timed_out_is_served_at_once_never_waited_for_twice(self, world, settings):
        es = world.backends["elasticsearch"]
        with PartialShards(es["URLS"][0], spoil=1, how="timed_out") as proxy:
            settings.SEARCH_BACKENDS = {**world.backends, "elasticsearch": {**es, "URLS": [proxy.url]}}
            reset_backends()
            before = _partial_count("search", "not_retried")
            results = retrieve_sync("철거 보조금은 얼마까지?", top_k=3)
        assert proxy.spoiled == 1 and proxy.matching == 1  # the search was sent once
        assert self.ids(results)[0] == world.docs["ko_txt"].pk  # the hits that came back are served
        assert _partial_count("search", "not_retried") == before + 1

    def test_a_search_no_shard_answered_once_is_made_again_and_whole_twice_is_unavailable(self, world, settings):
        from knowledge.errors import SearchUnavailable

        es = world.backends["elasticsearch"]
        for spoil in (1, 2):
            with PartialShards(es["URLS"][0], spoil=spoil, how="failed") as proxy:
                settings.SEARCH_BACKENDS = {**world.backends, "elasticsearch": {**es, "URLS": [proxy.url]}}
                reset_backends()
                whole, failed = _partial_count("search", "whole"), _partial_count("search", "failed")
                if spoil == 1:
                    results = retrieve_sync("철거 보조금은 얼마까지?", top_k=3)
                    assert self.ids(results)[0] == world.docs["ko_txt"].pk
                    assert _partial_count("search", "whole") == whole + 1
                else:
                    with pytest.raises(SearchUnavailable, match=r"\(503\): all shards failed"):
                        retrieve_sync("철거 보조금은 얼마까지?", top_k=3)
                    assert _partial_count("search", "failed") == failed + 1
            assert proxy.spoiled == spoil and proxy.matching == 2  # never a third try

    def test_a_search_some_shards_never_answer_is_served_from_the_shards_that_did(self, world, caplog):
        """A red index behind the alias (its one shard can be allocated nowhere): made again, still
        partial, then served from the index that answered, counted and logged."""
        backend = get_search_backend()
        concrete = backend.info().concrete_index
        mappings = backend.client.indices.get_mapping(index=concrete)[concrete]["mappings"]
        red = f"{concrete}-red"
        backend.client.indices.create(
            index=red,
            settings={"number_of_shards": 1, "number_of_replicas": 0, "index.routing.allocation.require._name": "-"},
            mappings=mappings,
            wait_for_active_shards="0",
        )
        try:
            backend.client.indices.put_alias(index=red, name=backend.alias)
            before = _partial_count("search", "partial")
            with caplog.at_level(logging.WARNING, logger="knowledge.search.elasticsearch.failures"):
                results = retrieve_sync("철거 보조금은 얼마까지?", top_k=3)
        finally:
            backend.client.indices.delete(index=red)
        assert self.ids(results)[0] == world.docs["ko_txt"].pk and results[0].chunk.text
        assert _partial_count("search", "partial") == before + 1
        assert "partial twice" in caplog.text and "shards failed" in caplog.text


class TestElasticsearchBigramBackend(BackendContract):
    """Elasticsearch without the nori plugin: character bigrams computed by the platform."""

    backend = "elasticsearch"
    analyzer = "char-bigram"
    pytestmark = [pytest.mark.services, pytest.mark.django_db]

    def test_the_index_matches_on_platform_bigrams(self, world):
        backend = get_search_backend()
        info = backend.info()
        assert info.analyzer == "char-bigram"
        mapping = backend.client.indices.get_mapping(index=info.concrete_index)[info.concrete_index]["mappings"]
        assert mapping["properties"]["terms"]["analyzer"] == "whitespace"
        assert mapping["properties"]["content"]["index"] is False
