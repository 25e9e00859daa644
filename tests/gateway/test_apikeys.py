"""API keys: creation (command, service), bearer authentication, revocation, DRF classes."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from chat.errors import AuthenticationRequired
from chat.gateway.auth import APIKeyAuthentication, HasScope, Principal, authenticate_bearer, hash_key
from chat.gateway.models import APIKey
from chat.gateway.services import apikey_create, apikey_revoke
from tests.gateway.conftest import in_thread

pytestmark = [pytest.mark.django_db(transaction=True)]


def _user(name="alice"):
    return get_user_model().objects.create_user(name, password="pw-unused-123")


def _key(scopes=("chat",), **kwargs):
    user = get_user_model().objects.filter(username="alice").first() or _user()
    return apikey_create(name="test", user=user, scopes=list(scopes), **kwargs)


def test_the_command_prints_the_key_once_and_stores_only_its_hash():
    _user("bob")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_key", "--user", "bob", "--scopes", "chat,knowledge:read", "--expires", "30d", stdout=out, stderr=err
    )
    full = out.getvalue().strip()
    row = APIKey.objects.get()
    assert full.startswith(row.prefix + "_") and row.prefix.startswith("vhk_") and len(row.prefix) == 12
    assert row.secret_hash == hash_key(full) and full not in str(APIKey.objects.values().get())
    assert row.scopes == ["chat", "knowledge:read"] and row.user.username == "bob"
    assert timedelta(days=29) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert "not shown again" in err.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "--scopes", "chat"], "No user"),
        (["--user", "carol", "--scopes", "chat,admin"], "Unknown scope"),
        (["--user", "carol", "--scopes", "chat", "--expires", "yesterday"], "--expires"),
    ],
)
def test_the_command_explains_bad_arguments(args, message):
    from django.core.management.base import CommandError

    _user("carol")
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args, stdout=io.StringIO(), stderr=io.StringIO())


async def test_a_bearer_key_authenticates_as_its_owner(single_redis):
    created = in_thread(_key, scopes=["chat", "knowledge:read"])
    principal = await authenticate_bearer(f"Bearer {created.full_key}")
    assert principal == Principal(
        user_id=created.api_key.user_id,
        api_key_id=created.api_key.pk,
        scopes=frozenset({"chat", "knowledge:read"}),
        policy_id=None,
        prefix=created.api_key.prefix,
    )
    assert await authenticate_bearer(None) is None
    assert await authenticate_bearer("Basic dXNlcjpwdw==") is None


async def test_it_records_last_use_at_most_once_a_minute(single_redis):
    import asyncio

    created = in_thread(_key)
    await authenticate_bearer(f"Bearer {created.full_key}")
    await asyncio.sleep(0.2)  # the write happens off the request path
    first = in_thread(lambda: APIKey.objects.get(pk=created.api_key.pk).last_used_at)
    assert first is not None
    await authenticate_bearer(f"Bearer {created.full_key}")
    await asyncio.sleep(0.2)
    assert in_thread(lambda: APIKey.objects.get(pk=created.api_key.pk).last_used_at) == first


async def test_it_refuses_malformed_unknown_expired_and_revoked_keys(single_redis):
    created = in_thread(_key)
    good = created.full_key
    expired = in_thread(_key, expires_at=timezone.now() - timedelta(seconds=1))
    cases = {
        "Bearer": "Malformed",
        "Bearer nonsense": "Malformed",
        f"Bearer {good[:-1]}": "Malformed",
        f"Bearer vhk_zzzzzzzz_{good[13:]}": "Unknown",
        f"Bearer {good[:13]}{'A' * 43}": "Unknown",  # right prefix, wrong secret
        f"Bearer {expired.full_key}": "expired",
    }
    for header, words in cases.items():
        with pytest.raises(AuthenticationRequired, match=words) as exc:
            await authenticate_bearer(header)
        assert exc.value.http_status == 401
    assert await authenticate_bearer(f"Bearer {good}")  # now cached in this process
    in_thread(apikey_revoke, api_key=created.api_key)
    with pytest.raises(AuthenticationRequired, match="revoked"):
        await authenticate_bearer(f"Bearer {good}")


async def test_revocation_holds_without_redis(redis_down):
    created = in_thread(_key)
    assert await authenticate_bearer(f"Bearer {created.full_key}")
    in_thread(apikey_revoke, api_key=created.api_key)  # Redis unreachable: only the row changes
    with pytest.raises(AuthenticationRequired, match="revoked"):
        await authenticate_bearer(f"Bearer {created.full_key}")  # cannot confirm in Redis: re-reads the row


class _WriteView(APIView):
    authentication_classes = [APIKeyAuthentication]
    permission_classes = [IsAuthenticated, HasScope("knowledge:write")]

    def get(self, request):
        return Response({"user": request.user.username, "key": request.auth.prefix})


def test_drf_authentication_and_scope_permission(settings):
    settings.REDIS_URL = None
    factory = APIRequestFactory()
    reader = _key(scopes=["knowledge:read"])
    writer = _key(scopes=["knowledge:read", "knowledge:write"])

    ok = _WriteView.as_view()(factory.get("/", HTTP_AUTHORIZATION=f"Bearer {writer.full_key}"))
    assert ok.status_code == 200 and ok.data == {"user": "alice", "key": writer.api_key.prefix}

    forbidden = _WriteView.as_view()(factory.get("/", HTTP_AUTHORIZATION=f"Bearer {reader.full_key}"))
    assert forbidden.status_code == 403 and "knowledge:write" in str(forbidden.data)

    bad = _WriteView.as_view()(factory.get("/", HTTP_AUTHORIZATION="Bearer vhk_nope"))
    assert bad.status_code == 401 and bad["WWW-Authenticate"].startswith("Bearer")

    apikey_revoke(api_key=writer.api_key)
    revoked = _WriteView.as_view()(factory.get("/", HTTP_AUTHORIZATION=f"Bearer {writer.full_key}"))
    assert revoked.status_code == 401 and "revoked" in str(revoked.data)
