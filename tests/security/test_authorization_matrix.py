"""Who may call what: every URL pattern of the project x every kind of caller, over a live server.

The routes come from the resolver, so a new URL without a row here fails the test. Callers:
anonymous, a signed-in user (alice, who owns the data), another user (bob), staff (no model
permissions), an API key per scope (alice's; the export key is the staff user's) and a
revoked key. Each cell is the status the caller must get; the ``bob`` column is the
cross-user read check (someone else's conversation, message, collection or document is a
404, indistinguishable from a missing one).
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from django.contrib.admin import site
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from chat.gateway import services as gateway
from chat.models import Conversation, Message
from knowledge.models import Collection, Document, Job

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

CALLERS = ("anon", "alice", "bob", "staff", "key_chat", "key_read", "key_write", "key_export", "revoked")


def routes() -> list[str]:
    def walk(patterns, prefix: str = ""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield prefix + str(p.pattern)

    return list(walk(get_resolver().url_patterns))


def same(status: int | set[int]) -> dict[str, int | set[int]]:
    return dict.fromkeys(CALLERS, status)


def row(anon, alice, bob, staff, key_chat, key_read, key_write, key_export, revoked) -> dict[str, int | set[int]]:
    return dict(
        zip(CALLERS, (anon, alice, bob, staff, key_chat, key_read, key_write, key_export, revoked), strict=True)
    )


# Browser-only pages: a key is not a browser login, so key callers are anonymous there.
def page(anon, alice, bob, staff) -> dict[str, int | set[int]]:
    return row(anon, alice, bob, staff, anon, anon, anon, anon, anon)


ADMIN = page(302, 302, 302, 200)
# Knowledge API: reads need a knowledge scope (a key) or a login; alice's private data is hers.
K_LIST = row(401, 200, 200, 200, 403, 200, 200, 403, 401)
K_OWN = row(401, 200, 404, 200, 403, 200, 200, 403, 401)
K_NO_GET = row(401, 405, 405, 405, 403, 405, 405, 403, 401)
# Chat API: anonymous chat is on; conversations belong to their owner only (staff included).
C_LIST = row(200, 200, 200, 200, 200, 403, 403, 403, 401)
C_OWN = row(404, 200, 404, 404, 200, 403, 403, 403, 401)

# (method, path template) -> expected status per caller. {ids} are filled from the fixtures.
MATRIX: dict[str, tuple[str, str, dict[str, int | set[int]]]] = {
    "healthz": ("GET", "/healthz", same(200)),
    "readyz": ("GET", "/readyz", same({200, 503})),
    "metrics": ("GET", "/metrics", same(200)),  # the app's; nginx answers 404 publicly (test_nginx)
    "admin/live/": ("GET", "/admin/live/", ADMIN),
    "admin/live/figures.json": ("GET", "/admin/live/figures.json", ADMIN),
    "admin/": ("GET", "/admin/", ADMIN),
    "admin/login/": ("GET", "/admin/login/", page(200, 200, 200, 302)),
    "admin/logout/": ("GET", "/admin/logout/", page(302, 302, 302, 405)),  # logging out is a POST
    "admin/password_change/": ("GET", "/admin/password_change/", ADMIN),
    "admin/password_change/done/": ("GET", "/admin/password_change/done/", ADMIN),
    "admin/autocomplete/": ("GET", "/admin/autocomplete/", page(302, 302, 302, 403)),
    "admin/jsi18n/": ("GET", "/admin/jsi18n/", ADMIN),
    "admin/r/<path:content_type_id>/<path:object_id>/": ("GET", "/admin/r/{doc_ct}/{doc}/", same(302)),
    "admin/^(?P<app_label>auth|inference|knowledge|chat|gateway)/$": (
        "GET",
        "/admin/knowledge/",
        page(302, 302, 302, 404),
    ),
    "admin/(?P<url>.*)$": ("GET", "/admin/no-such-page", page(302, 302, 302, 404)),
    "i18n/setlang/": ("GET", "/i18n/setlang/", same({200, 204, 302})),
    "api/schema/": ("GET", "/api/schema/", same(200)),
    "api/docs/": ("GET", "/api/docs/", same(200)),
    "api/redoc/": ("GET", "/api/redoc/", same(200)),
    "api/knowledge/collections/": ("GET", "/api/knowledge/collections/", K_LIST),
    "api/knowledge/collections/<str:collection>/": ("GET", "/api/knowledge/collections/{slug}/", K_OWN),
    "api/knowledge/collections/<str:collection>/documents/by-external-id/<str:external_id>/": (
        "GET",
        "/api/knowledge/collections/{slug}/documents/by-external-id/ext-1/",
        K_OWN,
    ),
    "api/knowledge/documents/": ("GET", "/api/knowledge/documents/", K_LIST),
    "api/knowledge/documents/<int:pk>/": ("GET", "/api/knowledge/documents/{doc}/", K_OWN),
    "api/knowledge/documents/<int:pk>/reindex/": ("GET", "/api/knowledge/documents/{doc}/reindex/", K_NO_GET),
    "api/knowledge/jobs/<int:pk>/": ("GET", "/api/knowledge/jobs/{job}/", K_OWN),
    "api/knowledge/search/": ("GET", "/api/knowledge/search/", K_NO_GET),
    "knowledge/documents/<int:pk>/": ("GET", "/knowledge/documents/{doc}/", page(404, 200, 404, 200)),
    "api/gateway/whoami": ("GET", "/api/gateway/whoami", row(200, 200, 200, 200, 200, 200, 200, 200, 401)),
    "api/conversations/": ("GET", "/api/conversations/", C_LIST),
    "api/conversations/<uuid:conversation_id>/": ("GET", "/api/conversations/{conv}/", C_OWN),
    "api/conversations/<uuid:conversation_id>/messages/": ("GET", "/api/conversations/{conv}/messages/", C_OWN),
    "api/messages/<int:message_id>/feedback/": (
        "GET",
        "/api/messages/{msg}/feedback/",
        row(405, 405, 405, 405, 405, 403, 403, 403, 401),
    ),
    "api/exports/conversations/": (
        "GET",
        "/api/exports/conversations/",
        row(401, 403, 403, 200, 403, 403, 403, 200, 401),
    ),
    "^api/": ("GET", "/api/no-such-endpoint/", same(404)),
    "v1/chat/completions": ("GET", "/v1/chat/completions", same(405)),
    "v1/models": ("GET", "/v1/models", row(401, 401, 401, 401, 200, 403, 403, 403, 401)),
    # Unknown to everyone, so a chat key gets OpenAI's model_not_found (404), the others their refusal.
    "v1/models/<path:name>": ("GET", "/v1/models/no-such/model", row(401, 401, 401, 401, 404, 403, 403, 403, 401)),
    "v1/embeddings": ("GET", "/v1/embeddings", same(405)),
    "": ("GET", "/", same(200)),
    # The admin's own extra pages.
    "admin/auth/user/<id>/password/": ("GET", "/admin/auth/user/{alice_id}/password/", page(302, 302, 302, 403)),
    "admin/knowledge/document/upload/": ("GET", "/admin/knowledge/document/upload/", page(302, 302, 302, 403)),
    "admin/knowledge/document/index-status/": (
        "GET",
        "/admin/knowledge/document/index-status/",
        page(302, 302, 302, 403),
    ),
}

# Admin pages of every registered model: Django admin's own checks (login, then the model permission).
_ADMIN_MODEL = re.compile(
    r"^admin/(?P<app>\w+)/(?P<model>\w+)/(?:add/|<path:object_id>/(?:history/|delete/|change/)?)?$"
)

# Writes: a caller that may read must still not write (fail-closed), and never someone else's data.
# Session callers send no CSRF token here: the refusal (403) is the CSRF check holding. Alice has
# no knowledge model permission, so even her knowledge:write key may not create or delete (fail-closed).
WRITES: list[tuple[str, str, dict, dict[str, int | set[int]]]] = [
    (
        "POST",
        "/api/knowledge/collections/",
        {"name": "m-{n}", "slug": "m-{n}"},
        row(401, 403, 403, 403, 403, 403, 403, 403, 401),
    ),
    ("DELETE", "/api/knowledge/documents/{doc}/", {}, row(401, 403, 403, 403, 403, 403, 403, 403, 401)),
    ("DELETE", "/api/conversations/{conv}/", {}, row(403, 403, 403, 403, 204, 403, 403, 403, 401)),
    ("POST", "/v1/chat/completions", {}, row(401, 401, 401, 401, 400, 403, 403, 403, 401)),
    ("POST", "/v1/embeddings", {}, row(401, 401, 401, 401, 400, 403, 403, 403, 401)),
]


@pytest.fixture
def world(live_asgi, django_user_model, settings):
    alice = django_user_model.objects.create_user("m-alice", password="pw")
    bob = django_user_model.objects.create_user("m-bob", password="pw")
    staff = django_user_model.objects.create_user("m-staff", password="pw", is_staff=True)
    private = Collection.objects.create(name="m-private", slug="m-private")
    private.readers.add(alice)
    doc = Document.objects.create(
        collection=private, title="m doc", original_filename="m.txt", file_type="txt", content_hash="m" * 64,
        external_id="ext-1", status=Document.Status.INDEXED, file="knowledge/m.txt",
    )  # fmt: skip
    job = Job.objects.create(kind=Job.Kind.INGEST, document=doc, status=Job.Status.DONE)
    conv = Conversation.objects.create(user=alice, title="m", channel=Conversation.Channel.API)
    msg = Message.objects.create(conversation=conv, role=Message.Role.ASSISTANT, content="답")
    keys = {
        "key_chat": gateway.apikey_create(name="m", user=alice, scopes=["chat"]).full_key,
        "key_read": gateway.apikey_create(name="m", user=alice, scopes=["knowledge:read"]).full_key,
        "key_write": gateway.apikey_create(name="m", user=alice, scopes=["knowledge:write"]).full_key,
        "key_export": gateway.apikey_create(name="m", user=staff, scopes=["export"]).full_key,
    }
    revoked = gateway.apikey_create(name="m", user=alice, scopes=["chat", "knowledge:read", "export"])
    gateway.apikey_revoke(api_key=revoked.api_key)
    keys["revoked"] = revoked.full_key
    ids = {
        "slug": private.slug,
        "doc": doc.pk,
        "job": job.pk,
        "conv": conv.pk,
        "msg": msg.pk,
        "doc_ct": ContentType.objects.get_for_model(Document).pk,
        "alice_id": alice.pk,
    }
    clients: dict[str, httpx.Client] = {}
    for name, user in (("alice", alice), ("bob", bob), ("staff", staff)):
        session = Client()
        session.force_login(user)
        clients[name] = httpx.Client(base_url=live_asgi.url, cookies={"sessionid": session.cookies["sessionid"].value})
    clients["anon"] = httpx.Client(base_url=live_asgi.url)
    for name, key in keys.items():
        clients[name] = httpx.Client(base_url=live_asgi.url, headers={"Authorization": f"Bearer {key}"})
    yield clients, ids
    for c in clients.values():
        c.close()


def _matches(expected: int | set[int], status: int) -> bool:
    return status in expected if isinstance(expected, set) else status == expected


def test_every_url_pattern_has_a_row():
    missing = [r for r in routes() if r not in MATRIX and not _ADMIN_MODEL.match(r)]
    assert missing == [], f"URL patterns without a row in the authorization matrix: {missing}"
    registered = {f"{m._meta.app_label}/{m._meta.model_name}" for m in site._registry}
    admin_models = {f"{m['app']}/{m['model']}" for r in routes() if (m := _ADMIN_MODEL.match(r)) and r not in MATRIX}
    assert admin_models == registered


def test_each_caller_gets_the_expected_status_on_every_route(world):
    clients, ids = world
    wrong = []
    for method, template, expected in MATRIX.values():
        path = template.format(**ids)
        for caller in CALLERS:
            status = clients[caller].request(method, path, follow_redirects=False).status_code
            if not _matches(expected[caller], status):
                wrong.append(f"{caller:10} {method} {path} -> {status}, expected {expected[caller]}")
    assert wrong == [], "\n".join(wrong)


def test_admin_model_pages_need_staff_and_the_model_permission(world):
    clients, _ids = world
    wrong = []
    for model in site._registry:
        path = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for caller in CALLERS:
            status = clients[caller].get(path, follow_redirects=False).status_code
            expected = 403 if caller == "staff" else 302  # staff without the model permission
            if model._meta.model_name == "chatsettings" and caller == "staff":
                expected = 302  # the one-row settings page redirects to its change page (then 403)
            if status != expected:
                wrong.append(f"{caller:10} GET {path} -> {status}, expected {expected}")
    assert wrong == [], "\n".join(wrong)


def test_writes_are_refused_to_everyone_without_the_right(world):
    clients, ids = world
    wrong = []
    for n, caller in enumerate(CALLERS):
        for method, template, body, expected in WRITES:
            path = template.format(**ids)
            payload = {k: v.format(n=f"{n}-{uuid.uuid4().hex[:6]}") for k, v in body.items()}
            response = clients[caller].request(method, path, json=payload if method != "DELETE" else None)
            if not _matches(expected[caller], response.status_code):
                wrong.append(f"{caller:10} {method} {path} -> {response.status_code} {response.text[:120]}")
    assert wrong == [], "\n".join(wrong)
