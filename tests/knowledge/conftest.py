"""Knowledge test fixtures.

Every test here searches under an alias unique to this test session (ES indexes
``vh-test-<id>-*`` are deleted at the end), so tests never touch the real
``vh-chunks`` index and parallel sessions do not collide. Unless a test says
otherwise it uses the local backend with jobs run inline; the contract suite
(test_backend_contract.py) runs the same tests on each backend.
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.conf import settings as django_settings

from knowledge.search import reset_backends

SESSION_ALIAS = f"vh-test-{uuid.uuid4().hex[:8]}"


def backend_settings(alias: str = SESSION_ALIAS) -> dict:
    """SEARCH_BACKENDS with the test alias, 1 shard / 0 replicas, a short ES timeout."""
    backends = {name: dict(config) for name, config in django_settings.SEARCH_BACKENDS.items()}
    for config in backends.values():
        config["INDEX"] = alias
    es = backends["elasticsearch"]
    es["URLS"] = es.get("URLS") or [os.environ.get("ES_URL", "http://127.0.0.1:9200")]
    es.update(SHARDS=1, REPLICAS=0, REFRESH="wait_for")
    return backends


@pytest.fixture(autouse=True)
def _knowledge_settings(settings, tmp_path):
    settings.SEARCH_BACKENDS = backend_settings()
    settings.SEARCH_BACKEND = "local"
    settings.KNOWLEDGE_JOBS_INLINE = True
    settings.MEDIA_ROOT = str(tmp_path / "media")
    reset_backends()
    yield
    reset_backends()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_indexes():
    yield
    url = os.environ.get("ES_URL")
    if not url:
        return
    from elasticsearch import Elasticsearch

    client = Elasticsearch(url, request_timeout=10)
    try:
        client.indices.delete(index=f"{SESSION_ALIAS}*", ignore_unavailable=True, allow_no_indices=True)
    except Exception:  # ES already gone: nothing to clean
        pass
    finally:
        client.close()


@pytest.fixture
def media_files(settings):
    """Lists the files stored under MEDIA_ROOT (to prove a rejected upload left none)."""
    from pathlib import Path

    def files() -> list[str]:
        root = Path(settings.MEDIA_ROOT)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []

    return files


@pytest.fixture
def collection(db):
    from knowledge.services import collection_create

    return collection_create(name="빈집 정책 테스트", slug="test-policy", is_public=True)


@pytest.fixture
def private_collection(db):
    from knowledge.services import collection_create

    return collection_create(name="내부 자료", slug="internal", is_public=False)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="pw")


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a block's on-commit hooks (ingestion jobs) as its commit would: the test's own
    transaction never commits, so ``with committed(): document_upload(...)`` runs the job."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


# --- the REST API over a live server (API keys, sync, walkthrough, schemathesis) ------------

LIVE_ALIAS = f"{SESSION_ALIAS}-live"


@pytest.fixture(scope="session")
def knowledge_live(django_db_setup, django_db_blocker, tmp_path_factory):
    """The production ASGI app in a subprocess on the test database, searching Elasticsearch
    under this session's alias, with ingestion jobs run inline (a synced document is
    searchable when its request returns; the job endpoint still reports it)."""
    from tests.live import LiveServer

    server = LiveServer(
        env={
            "KNOWLEDGE_JOBS_INLINE": "1",
            "SEARCH_INDEX_ALIAS": LIVE_ALIAS,
            "ES_NUMBER_OF_SHARDS": "1",
            "ES_NUMBER_OF_REPLICAS": "0",
            "MEDIA_ROOT": str(tmp_path_factory.mktemp("live-media")),
            "CHAT_SETTINGS_TTL_S": "0",
        }
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_index(settings):
    """This process's search backend pointed at the live server's Elasticsearch index."""
    settings.SEARCH_BACKENDS = backend_settings(LIVE_ALIAS)
    settings.SEARCH_BACKEND = "elasticsearch"
    reset_backends()
    from knowledge.search import get_search_backend

    yield get_search_backend()
    reset_backends()


def api_key(user, *scopes: str) -> str:
    """A real API key for ``user`` with ``scopes`` (the full key, as create_api_key prints it)."""
    from chat.gateway.services import apikey_create

    return apikey_create(name=f"test-{'-'.join(scopes)}", user=user, scopes=list(scopes)).full_key
