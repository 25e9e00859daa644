"""REST API over a live server: JSON and SSE answers, feedback, and owner-only access."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.chat.conftest import nonce, session_cookie

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("endpoints")]

CSRF = "a" * 32


def client_for(live, user) -> httpx.Client:
    cookies = {"sessionid": session_cookie(user), "csrftoken": CSRF}
    return httpx.Client(base_url=f"{live.url}/api", cookies=cookies, headers={"X-CSRFToken": CSRF}, timeout=120)


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_it_answers_in_json_and_sse_and_takes_feedback(chat_settings, live_asgi, alice):
    chat_settings.retrieval_enabled = False
    chat_settings.save()
    api = client_for(live_asgi, alice)
    conversation = api.post("/conversations/", json={"title": "t"}).json()
    url = f"/conversations/{conversation['id']}/messages/"

    answer = api.post(url, json={"message": f"Hello ({nonce()})"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"]["role"] == "assistant" and body["message"]["status"] == "complete"
    assert body["usage"]["completion_tokens"] > 0

    with api.stream("POST", url, json={"message": f"Again ({nonce()})", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    names = [name for name, _ in events]
    assert names[:2] == ["start", "sources"] and names[-1] == "end" and "token" in names
    streamed = "".join(data["text"] for name, data in events if name == "token")

    messages = api.get(url).json()
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert messages[-1]["content"] == streamed and messages[-1]["id"] == events[0][1]["message_id"]

    rated = api.put(f"/messages/{messages[-1]['id']}/feedback/", json={"rating": "up"})
    assert rated.json() == {"message_id": messages[-1]["id"], "rating": "up"}
    api.put(f"/messages/{messages[-1]['id']}/feedback/", json={"rating": "down", "comment": "no"})
    assert api.get(url).json()[-1]["feedback"] == "down"
    assert api.put(f"/messages/{messages[-1]['id']}/feedback/", json={"rating": "meh"}).status_code == 400


def test_users_see_only_their_own_conversations(chat_settings, live_asgi, alice, bob):
    alice_api, bob_api = client_for(live_asgi, alice), client_for(live_asgi, bob)
    mine = alice_api.post("/conversations/", json={"title": "alice"}).json()
    base = f"/conversations/{mine['id']}/"
    assert [c["id"] for c in alice_api.get("/conversations/").json()["results"]] == [mine["id"]]
    assert bob_api.get("/conversations/").json()["results"] == []
    for response in (
        bob_api.get(base),
        bob_api.get(base + "messages/"),
        bob_api.post(base + "messages/", json={"message": "hi"}),
        bob_api.delete(base),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    assert alice_api.delete(base).status_code == 204
    assert alice_api.get(base).status_code == 404


def test_it_validates_the_body_and_requires_csrf_for_sessions(chat_settings, live_asgi, alice):
    api = client_for(live_asgi, alice)
    conversation = api.post("/conversations/", json={}).json()
    url = f"/conversations/{conversation['id']}/messages/"
    assert api.post(url, json={"message": ""}).status_code == 400
    assert api.post(url, json={"message": "x", "bogus": 1}).json()["error"]["code"] == "invalid_request"
    no_csrf = httpx.post(
        f"{live_asgi.url}/api{url}", json={"message": "x"}, cookies={"sessionid": session_cookie(alice)}
    )
    assert no_csrf.status_code == 403
    assert httpx.get(f"{live_asgi.url}/api/schema/").status_code == 200
