"""Operators' conversation export over a live server: who may export, JSONL and CSV content,
the date range, CSV formula injection, and a streamed (chunked) response."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import httpx
import pytest
from django.utils import timezone

from chat.gateway.services import apikey_create
from chat.models import Conversation, Feedback, Message
from tests.chat.conftest import session_cookie

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

EXPORT = "/api/exports/conversations/"


def key_for(user, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {apikey_create(name='export', user=user, scopes=list(scopes)).full_key}"}


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user("operator", password="pw", is_staff=True)


def conversation(*, user=None, session_key: str = "", when: dt.datetime, question: str, answer: str) -> Conversation:
    c = Conversation.objects.create(user=user, session_key=session_key, title=question[:20], channel="web")
    asked = Message.objects.create(conversation=c, role="user", content=question)
    answered = Message.objects.create(
        conversation=c,
        role="assistant",
        content=answer,
        model="smollm2",
        citations=[{"n": 1, "title": "철거 안내", "url": "/knowledge/documents/7/", "document_id": 7, "cited": True}],
        prompt_tokens=120,
        completion_tokens=30,
    )
    Conversation.objects.filter(pk=c.pk).update(created_at=when)
    Message.objects.filter(pk__in=[asked.pk, answered.pk]).update(created_at=when)
    c.answer = answered  # type: ignore[attr-defined]
    return c


def test_staff_exports_conversations_with_messages_citations_and_feedback(live_asgi, operator, alice):
    now = timezone.now()
    inside = conversation(
        user=alice, when=now - dt.timedelta(days=2), question="철거 보조금은?", answer="최대 1,500만 원 [1]"
    )
    anonymous = conversation(
        session_key="s3cr3t-session", when=now - dt.timedelta(days=1), question='=HYPERLINK("http://x")', answer="@x"
    )
    conversation(user=alice, when=now - dt.timedelta(days=40), question="오래된 질문", answer="오래된 답")  # outside
    Feedback.objects.create(message=inside.answer, user=alice, rating="down", comment="금액이 틀림")

    staff = httpx.Client(base_url=live_asgi.url, cookies={"sessionid": session_cookie(operator)}, timeout=30)
    response = staff.get(EXPORT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [r["id"] for r in records] == [str(inside.pk), str(anonymous.pk)]  # last 30 days, oldest first
    first = records[0]
    assert first["user_id"] == alice.pk and first["anonymous"] is False
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    answer = first["messages"][1]
    assert answer["citations"][0]["document_id"] == 7 and answer["prompt_tokens"] == 120
    assert answer["feedback"] == [
        {"rating": "down", "comment": "금액이 틀림", "created_at": answer["feedback"][0]["created_at"],
         "updated_at": answer["feedback"][0]["updated_at"]}
    ]  # fmt: skip
    assert "s3cr3t-session" not in response.text  # a session key is a credential: never exported
    assert records[1]["anonymous"] is True and records[1]["user_id"] is None

    since = (now - dt.timedelta(days=50)).isoformat()
    until = (now - dt.timedelta(days=1, hours=12)).isoformat()
    ranged = staff.get(EXPORT, params={"since": since, "until": until, "output": "csv"})
    assert ranged.status_code == 200 and ranged.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(ranged.content.decode("utf-8-sig"))))
    assert len(rows) == 4 and len({r["conversation_id"] for r in rows}) == 2  # the old one and `inside`
    assert {r["content"] for r in rows} >= {"철거 보조금은?", "오래된 질문"}
    rated = next(r for r in rows if r["message_id"] == str(inside.answer.pk))
    assert (rated["feedback_down"], rated["feedback_up"], rated["cited_document_ids"]) == ("1", "0", "7")
    assert json.loads(rated["feedback_comments"]) == ["금액이 틀림"]

    injected = staff.get(EXPORT, params={"output": "csv"}).content.decode("utf-8-sig")
    cells = [r["content"] for r in csv.DictReader(io.StringIO(injected))]
    assert '\'=HYPERLINK("http://x")' in cells and "'@x" in cells  # never a live formula

    bad = staff.get(EXPORT, params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["since"]
    assert staff.get(EXPORT, params={"output": "xlsx"}).json()["error"]["fields"]["output"]


def test_only_staff_and_export_keys_of_staff_may_export(live_asgi, operator, alice):
    def get(**kwargs) -> httpx.Response:
        return httpx.get(f"{live_asgi.url}{EXPORT}", timeout=30, **kwargs)

    assert get().status_code == 401
    assert get(cookies={"sessionid": session_cookie(alice)}).status_code == 403
    no_scope = get(headers=key_for(operator, "chat", "knowledge:read"))
    assert no_scope.status_code == 403
    assert (no_scope.json()["error"]["reason"], no_scope.json()["error"]["scope"]) == ("missing_scope", "export")
    # A key never has more rights than its owner: an export key of a non-staff user exports nothing.
    assert get(headers=key_for(alice, "export")).status_code == 403
    assert get(headers=key_for(operator, "export")).status_code == 200


def test_the_export_is_streamed(live_asgi, operator):
    now = timezone.now()
    conversations = [
        Conversation(user=operator, title=f"q{i}", channel="api") for i in range(600)
    ]  # more than a database chunk (200) and many write batches (50 lines)
    Conversation.objects.bulk_create(conversations)
    Message.objects.bulk_create(
        [Message(conversation=c, role="user", content=f"질문 {i} " + "빈집 " * 50) for i, c in enumerate(conversations)]
    )
    headers = key_for(operator, "export")
    with httpx.stream("GET", f"{live_asgi.url}{EXPORT}", headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # not built in memory and measured first
        assert response.headers.get("transfer-encoding") == "chunked"
        pieces = list(response.iter_raw())
    body = b"".join(pieces)
    lines = body.splitlines()
    assert len(lines) == 600 and all(json.loads(line)["messages"] for line in lines)
    assert len(pieces) > 1
    assert now - dt.timedelta(minutes=5) < dt.datetime.fromisoformat(json.loads(lines[0])["created_at"])
