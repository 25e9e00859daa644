"""Prepare a platform database for ``make loadtest`` and print what the load generator needs (JSON).

    DATABASE_URL=... REDIS_URL=... .venv/bin/python deploy/loadtest/setup_platform.py

Idempotent. Meant for the load test's own database (``make loadtest`` uses ``vh_loadtest``):
it raises every rate-limit policy out of reach (the test measures the platform, not its
limits), turns retrieval on (with reranking unless LOADTEST_RERANK=0), and creates a staff user ``loadtest`` with an
API key (chat, knowledge read/write), a browser session for the websocket users, and a public
collection of a few documents, ingested here (embedded by Triton, indexed in Elasticsearch).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Permission  # noqa: E402
from django.test import Client  # noqa: E402

from chat import access  # noqa: E402
from chat.gateway.models import RateLimitPolicy  # noqa: E402
from chat.gateway.services import apikey_create  # noqa: E402
from chat.models import ChatSettings  # noqa: E402
from inference import services as inference  # noqa: E402
from knowledge import services as knowledge  # noqa: E402
from knowledge.models import Collection, Document  # noqa: E402
from knowledge.search import get_search_backend  # noqa: E402

COLLECTION = "loadtest"
DOCUMENTS = {
    "demolition.txt": """빈집 철거 지원 사업 안내 (Vacant house demolition subsidy).
Owners of a vacant house that has been empty for more than one year can apply for a demolition subsidy.
The subsidy covers up to 70 percent of the demolition cost, at most 15 million won per house.
빈집 소유자는 철거비의 최대 70%, 가구당 1,500만 원까지 지원받을 수 있습니다.""",
    "repair.txt": """빈집 리모델링 지원 (Vacant house repair support).
A vacant house repaired for rent to young people or seniors can receive up to 20 million won.
The owner must rent it at 80 percent of the market rate or less for at least four years.""",
    "survey.txt": """빈집 실태조사 (Vacant house survey).
The county surveys every vacant house each spring and publishes the list in May.
Houses are graded 1 to 4: grades 3 and 4 are candidates for demolition.""",
    "tax.txt": """빈집 재산세 감면 (Property tax relief for vacant houses).
After demolition, the land keeps the house's tax rate for five years if the owner applies.
신청은 철거 후 60일 이내에 시·군·구청 세무과에 합니다.""",
    "procedure.txt": """신청 절차 (How to apply).
Apply at the city or county office (빈집 담당 부서) with the building register, proof of ownership
and a photo of the house. The office visits within 30 days and decides within 60 days.""",
}


def main() -> dict[str, object]:
    # Rate limits: out of reach (requests, tokens, concurrency still checked and settled).
    RateLimitPolicy.objects.update(requests=10_000_000, tokens_per_minute=1_000_000_000, concurrent_requests=100_000)
    ChatSettings.objects.update_or_create(
        pk=1,
        defaults={
            "retrieval_enabled": True,
            "rerank_enabled": os.environ.get("LOADTEST_RERANK", "1") == "1",
            "top_k": 3,
            "temperature": 0.0,
            "max_tokens": 64,
        },
    )
    User = get_user_model()
    user, _ = User.objects.get_or_create(username="loadtest", defaults={"is_staff": True})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    # Staff is no write right on the knowledge base (docs/security.md): the uploads need the model permissions.
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="knowledge", codename__regex=r"^(add|change|delete|view)_(document|collection)$"
        )
    )
    key = apikey_create(user=user, name="loadtest", scopes=["chat", "knowledge:read", "knowledge:write"]).full_key

    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value

    collection = Collection.objects.filter(slug=COLLECTION).first() or knowledge.collection_create(
        name="Load test", slug=COLLECTION, is_public=True
    )
    inference.endpoints_sync_from_env()
    for filename, text in DOCUMENTS.items():
        if Document.objects.filter(collection=collection, original_filename=filename, status="indexed").exists():
            continue
        upload = knowledge.document_upload(collection=collection, filename=filename, data=text.encode(), title=filename)
        knowledge.document_ingest(document=upload.document)
    # The database outlives a search index (a new Elasticsearch, a wiped data dir): documents it
    # calls indexed are pushed again when the index lacks them.
    get_search_backend().ensure_index()
    knowledge.index_reconcile()
    access.forget()
    return {"api_key": key, "session": session, "collection": COLLECTION}


if __name__ == "__main__":
    print(json.dumps(main()))
