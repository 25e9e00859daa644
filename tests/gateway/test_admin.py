"""Admin: API keys shown once, revocation, live usage with reset, the response-cache page."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.messages import get_messages
from django.urls import reverse

from chat.gateway import cache
from chat.gateway.auth import hash_key
from chat.gateway.models import APIKey
from chat.gateway.services import CachedAnswer, Subject, admit, cache_put, settle

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

USAGE = "admin:gateway_ratelimitusage_changelist"
CACHE = "admin:gateway_responsecache_changelist"


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_an_api_key_is_shown_once_after_creation(admin_client, admin_user, single_redis):
    response = admin_client.post(
        reverse("admin:gateway_apikey_add"),
        {"name": "integration", "user": admin_user.pk, "scopes": ["chat", "knowledge:read"]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [m for m in _messages(response) if "not be shown again" in m]
    assert len(shown) == 1
    full = re.search(r"(vhk_[a-z0-9]{8}_[A-Za-z0-9_-]{43})", shown[0]).group(1)
    row = APIKey.objects.get()
    assert row.secret_hash == hash_key(full) and row.scopes == ["chat", "knowledge:read"]
    page = admin_client.get(reverse("admin:gateway_apikey_change", args=[row.pk])).content.decode()
    assert row.prefix in page and full not in page

    admin_client.post(
        reverse("admin:gateway_apikey_changelist"), {"action": "revoke", "_selected_action": [row.pk]}, follow=True
    )
    row.refresh_from_db()
    assert row.revoked_at is not None and not row.is_active


def test_usage_shows_current_counts_and_resets_them(admin_client, single_redis, make_policy, no_default_policies):
    make_policy("user", 10)
    for _ in range(3):
        assert async_to_sync(admit)(Subject(user_id=77), cache_key=None).allowed
    page = admin_client.get(reverse(USAGE), {"user_id": 77})
    assert page.status_code == 200
    html = page.content.decode()
    assert "user:77" in html and '<td class="requests">3</td>' in html

    response = admin_client.post(
        reverse(USAGE), {"user_id": 77, "action": "reset", "subject": ["user:77"]}, follow=True
    )
    assert any("Reset 1 subject" in m for m in _messages(response))
    assert '<td class="requests">0</td>' in admin_client.get(reverse(USAGE), {"user_id": 77}).content.decode()


def test_the_cache_page_looks_up_deletes_purges_and_sets_the_ttl(admin_client, single_redis):
    keys = [cache.entry_key(f"{i:064x}") for i in range(3)]
    for k in keys:
        async_to_sync(cache_put)(k, CachedAnswer(content=f"answer {k[-1]}", model="smollm2"))
    hit = async_to_sync(admit)(Subject(user_id=1), cache_key=keys[0])  # one lookup, one hit
    async_to_sync(settle)(Subject(user_id=1), hit, prompt_tokens=0, completion_tokens=0)

    page = admin_client.get(reverse(CACHE))
    html = page.content.decode()
    assert page.status_code == 200 and 'class="hit-rate">100 %' in html and "chat:response" in html

    entry = admin_client.get(reverse(CACHE), {"key": keys[1]}).content.decode()
    assert "answer 1" in entry and "smollm2" in entry

    admin_client.post(reverse(CACHE), {"action": "delete_key", "key": keys[1]})
    assert "No such entry" in admin_client.get(reverse(CACHE), {"key": keys[1]}).content.decode()

    # Purging asks first; nothing is deleted until confirmed.
    confirm = admin_client.post(reverse(CACHE), {"action": "purge_prefix", "prefix": "chat:response:0"})
    assert confirm.status_code == 200 and "Yes, delete" in confirm.content.decode()
    assert "answer 0" in admin_client.get(reverse(CACHE), {"key": keys[0]}).content.decode()
    done = admin_client.post(
        reverse(CACHE), {"action": "purge_prefix", "prefix": "chat:response:0", "confirm": "yes"}, follow=True
    )
    assert any("Deleted 2 key(s)" in m for m in _messages(done))

    async_to_sync(cache_put)(keys[0], CachedAnswer(content="again"))
    admin_client.post(reverse(CACHE), {"action": "flush"})  # confirmation page only
    flushed = admin_client.post(reverse(CACHE), {"action": "flush", "confirm": "yes"}, follow=True)
    assert any("Deleted 1 key(s)" in m for m in _messages(flushed))

    bad = admin_client.post(reverse(CACHE), {"action": "set_ttl", "seconds": 60}, follow=True)
    assert any("Invalid TTL" in m for m in _messages(bad))
    ok = admin_client.post(reverse(CACHE), {"action": "set_ttl", "seconds": 7200}, follow=True)
    assert any("7200" in m for m in _messages(ok))
    assert "7200 s (admin override)" in admin_client.get(reverse(CACHE)).content.decode()


def test_the_pages_survive_redis_being_down(admin_client, redis_down):
    for url in (reverse(CACHE), reverse(USAGE) + "?user_id=1"):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert any("Redis is unavailable" in m for m in _messages(response))
    response = admin_client.post(reverse(CACHE), {"action": "flush", "confirm": "yes"}, follow=True)
    assert response.status_code == 200 and any("Redis is unavailable" in m for m in _messages(response))


def test_the_gateway_section_of_the_admin_renders(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    for name in ("gateway_ratelimitpolicy", "gateway_apikey", "gateway_ratelimitusage", "gateway_responsecache"):
        assert f"/admin/gateway/{name.split('_', 1)[1]}/" in index
    for url in (
        "admin:gateway_ratelimitpolicy_changelist",
        "admin:gateway_apikey_changelist",
        "admin:gateway_apikey_add",
    ):
        assert admin_client.get(reverse(url)).status_code == 200
