"""Search on a three-node Elasticsearch cluster (deploy/local `es-cluster`) while one node dies.

The index is made as production makes it (3 shards, 1 replica, every node in ES_URLS). One
node is killed (SIGKILL: a crash, not a shutdown): every search keeps answering with the same
top document, the readiness probe reads ``degraded`` once the cluster is yellow (a replica
missing), a document uploaded meanwhile is indexed and found. The node is started again
afterwards and the cluster goes back to green. The test prints what it saw.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.test import override_settings
from elasticsearch import Elasticsearch

from knowledge.models import Document
from knowledge.search import get_search_backend, reset_backends
from knowledge.services import collection_create, collection_delete, document_upload, retrieve_sync
from knowledge.types import SearchFilters
from monitoring.health import Degraded
from tests.knowledge.conftest import SESSION_ALIAS, backend_settings
from tests.tools import need

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
SUBSIDY = "빈집 철거 보조금 안내\n\n철거 보조금은 주택 한 동당 최대 1,500만 원까지 지원됩니다."
SURVEY = "# 빈집 실태조사\n\n시장·군수·구청장은 5년마다 빈집 실태조사를 실시합니다."
REPAIR = "# 빈집 수리비 지원\n\n리모델링 후 임대하는 빈집에는 수리비를 최대 2,000만 원까지 지원합니다."


def _urls() -> list[str]:
    urls = os.environ.get("ES_CLUSTER_URLS", "")
    need(bool(urls), "ES_CLUSTER_URLS unset (deploy/local/up es-cluster starts the three nodes)")
    return urls.split(",")


def _start_missing_nodes() -> None:
    subprocess.run([str(REPO / "deploy/local/up"), "es-cluster"], check=True, capture_output=True, timeout=300)


def _wait_status(client: Elasticsearch, want: str, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if client.options(request_timeout=5).cluster.health()["status"] == want:
                return time.monotonic() - started
        except Exception:  # a node of the list is the dead one: the client tries another
            pass
        time.sleep(0.5)
    raise AssertionError(f"the cluster was not {want} within {timeout_s:g} s")


def _node_pid(name: str) -> int:
    index = name.rsplit("-", 1)[1]  # vh-es-<n>
    pid_file = REPO / ".local" / "run" / f"es-cluster-{index}.pid"
    return int(pid_file.read_text().strip())


async def _ping(backend) -> str:
    """The readiness probe's call, on a loop of its own (its client closed with it)."""
    try:
        return await backend.ping()
    finally:
        await backend.aclose()


def _upload(collection, filename: str, text: str) -> Document:
    result = document_upload(collection=collection, filename=filename, data=text.encode())
    assert result.document.status == Document.Status.INDEXED, result.document.error
    return result.document


def test_search_keeps_answering_while_one_node_of_three_is_down(tmp_path):
    urls = _urls()
    _start_missing_nodes()  # a node an earlier run left down
    client = Elasticsearch(urls, request_timeout=10, max_retries=3, retry_on_timeout=True)
    _wait_status(client, "green", 120)
    backends = backend_settings(alias=f"{SESSION_ALIAS}-cluster")
    backends["elasticsearch"].update(URLS=urls, SHARDS=3, REPLICAS=1)
    with override_settings(
        SEARCH_BACKEND="elasticsearch", SEARCH_BACKENDS=backends, KNOWLEDGE_JOBS_INLINE=True, MEDIA_ROOT=tmp_path
    ):
        reset_backends()
        backend = get_search_backend()
        backend.reset_index()
        collection = collection_create(name="클러스터", slug="es-cluster", is_public=True)
        killed = None
        try:
            subsidy = _upload(collection, "subsidy.txt", SUBSIDY)
            _upload(collection, "survey.md", SURVEY)
            _wait_status(client, "green", 60)
            filters = SearchFilters(collection_ids=(collection.id,))
            top = retrieve_sync("철거 보조금은 얼마까지?", filters=filters, top_k=3)
            assert top and top[0].chunk.document_id == subsidy.id
            assert "green (3 nodes)" in asyncio.run(_ping(backend))

            master = client.cat.master(format="json")[0]["node"]
            killed = next(n for n in ("vh-es-1", "vh-es-2", "vh-es-3") if n != master)
            os.kill(_node_pid(killed), signal.SIGKILL)
            down_at = time.monotonic()

            searches, errors, first_ids = 0, [], set()
            while time.monotonic() - down_at < 15:  # through failure detection and the replica promotion
                try:
                    found = retrieve_sync("철거 보조금은 얼마까지?", filters=filters, top_k=3)
                    first_ids.add(found[0].chunk.document_id if found else None)
                except Exception as exc:  # counted, and the test fails below
                    errors.append(type(exc).__name__)
                searches += 1
                time.sleep(0.1)
            _wait_status(client, "yellow", 60)
            to_yellow = time.monotonic() - down_at
            with pytest.raises(Degraded, match="yellow"):
                asyncio.run(_ping(backend))
            repair = _upload(collection, "repair.md", REPAIR)  # a write while a node is down
            found = retrieve_sync("수리비 지원은 얼마?", filters=filters, top_k=3)
            print(
                f"\nES cluster, {killed} killed (master {master}): {searches} searches in 15 s, "
                f"{len(errors)} errors {sorted(set(errors))}, top documents {first_ids}; "
                f"yellow when checked after the searches ({to_yellow:.1f} s after the kill); a document uploaded meanwhile: "
                f"{'found' if found and found[0].chunk.document_id == repair.id else 'NOT found'}"
            )
            assert errors == [] and first_ids == {subsidy.id}
            assert found and found[0].chunk.document_id == repair.id
        finally:
            collection_delete(collection=collection)
            for name in backend.list_indexes():
                backend.delete_index(name)
            reset_backends()
            if killed:
                _start_missing_nodes()
                back = _wait_status(client, "green", 180)
                print(f"{killed} started again; green after {back:.1f} s")
            client.close()
