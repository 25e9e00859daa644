"""Fixtures of the chat tests: answer settings sized for the small test model, users, a small knowledge base."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import access, config
from chat.models import ChatSettings

# Live servers started from here on read ChatSettings on every request, so a test's settings apply at once.
os.environ.setdefault("CHAT_SETTINGS_TTL_S", "0")

ORIGIN = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
GUIDE_TITLE_PREFIX = "빈집 철거 지원 안내"
GUIDE_TEXT = """빈집 철거 지원 사업 안내 (Vacant house demolition subsidy).

Owners of a vacant house that has been empty for more than one year can apply for a demolition subsidy.
The subsidy covers up to 70 percent of the demolition cost, at most 15 million won per house.
Apply at the city or county office (빈집 담당 부서) with the building register and proof of ownership.
빈집 소유자는 철거비의 최대 70%, 가구당 1,500만 원까지 지원받을 수 있습니다.
"""


def nonce() -> str:
    """Makes a question unique, so the response cache (shared Redis) never answers it."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def chat_settings(transactional_db) -> Iterator[ChatSettings]:
    """Answer settings for SmolLM2 on a 512-token slot: short prompt, short answers."""
    row = ChatSettings(
        pk=1,
        system_prompt="Answer in one short sentence using the sources. Cite sources like [1].",
        retrieval_enabled=True,
        top_k=2,
        rerank_enabled=False,
        history_token_budget=120,
        context_window=512,
        temperature=0.0,
        max_tokens=12,
    )
    row.save()
    access.forget()
    yield row
    config.invalidate()
    access.forget()


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(transactional_db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


def session_cookie(user) -> str:
    """A logged-in session (in the configured session store) for ``user``: the cookie value."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def ws_headers(cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = list(ORIGIN)
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return headers


@pytest.fixture
def guide(transactional_db):
    """A public collection holding one small indexed document (real Triton embeddings + Elasticsearch)."""
    from knowledge import services as knowledge

    collection = knowledge.collection_create(name=f"chat-test-{nonce()}", is_public=True)
    title = f"{GUIDE_TITLE_PREFIX} {nonce()}"
    upload = knowledge.document_upload(
        collection=collection, filename="guide.txt", data=GUIDE_TEXT.encode(), title=title
    )
    document = knowledge.document_ingest(document=upload.document)
    access.forget()
    yield document
    try:
        knowledge.document_delete(document=document)
    except Exception:
        pass


@pytest.fixture
def endpoints(transactional_db) -> None:
    """The environment's model endpoints as database rows (a flush between tests removes them)."""
    from inference.services import endpoints_sync_from_env

    endpoints_sync_from_env()
