"""The admin of model access, budgets, model-targeted policies, API-key model lists and the usage page."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from chat.gateway.models import APIKey, ModelAccess, ModelUsage, RateLimitPolicy, TokenBudget
from inference.models import ModelGroup

pytestmark = [pytest.mark.fast, pytest.mark.django_db]


@pytest.fixture
def groups():
    return ModelGroup.objects.create(name="alpha"), ModelGroup.objects.create(name="beta")


def test_an_api_key_gets_its_allowed_models_in_admin(admin_client, groups):
    owner = get_user_model().objects.create_user("owner")
    response = admin_client.post(
        reverse("admin:gateway_apikey_add"),
        {"name": "k", "user": owner.pk, "scopes": ["chat"], "allowed_models": [groups[1].pk], "expires_at": ""},
    )
    assert response.status_code == 302, response.content[:3000]
    key = APIKey.objects.get(name="k")
    assert key.allowed_models == [groups[1].pk]
    page = admin_client.get(reverse("admin:gateway_apikey_change", args=[key.pk])).content.decode()
    assert "alpha (generation (chat))" in page and "beta (generation (chat))" in page


def test_model_access_and_budgets_are_edited_in_admin(admin_client, groups):
    user = get_user_model().objects.create_user("ann")
    url = reverse("admin:gateway_modelaccess_add")
    response = admin_client.post(url, {"user": user.pk, "group": "", "allowed_models": [groups[0].pk]})
    assert response.status_code == 302, response.content[:3000]
    assert ModelAccess.objects.get(user=user).allowed_models == [groups[0].pk]
    response = admin_client.post(url, {"user": "", "group": "", "allowed_models": []})
    assert "Choose a user or a group" in response.content.decode()
    listing = admin_client.get(reverse("admin:gateway_modelaccess_changelist")).content.decode()
    assert "ann" in listing and "alpha" in listing

    response = admin_client.post(
        reverse("admin:gateway_tokenbudget_add"),
        {"scope": "user", "user": user.pk, "api_key": "", "model_group": groups[1].pk, "tokens_per_month": "5000",
         "enabled": "on"},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:3000]
    assert TokenBudget.objects.get(user=user).tokens_per_month == 5000
    response = admin_client.post(
        reverse("admin:gateway_tokenbudget_add"),
        {"scope": "api_key", "user": user.pk, "api_key": "", "model_group": "", "tokens_per_month": "1"},
    )
    assert "names a key, not a user" in response.content.decode()


def test_a_models_rate_limit_policy_is_its_scopes_default(admin_client, groups):
    url = reverse("admin:gateway_ratelimitpolicy_add")
    data = {"name": "alpha users", "scope": "user", "requests": "10", "window_seconds": "60",
            "tokens_per_minute": "0", "concurrent_requests": "0", "model_group": groups[0].pk, "enabled": "on"}  # fmt: skip
    assert "applies as its scope" in admin_client.post(url, data).content.decode()
    assert admin_client.post(url, {**data, "is_default": "on"}).status_code == 302
    # One default per scope for all models (the migration's) and one per scope and model.
    assert RateLimitPolicy.objects.filter(scope="user", is_default=True).count() == 2


def test_the_usage_page_charts_and_exports_the_rows(admin_client):
    today = timezone.localdate()
    for days_ago, model, key_id, user_id, requests, tokens in [
        (0, "alpha", 7, 3, 4, 100),
        (1, "alpha", 0, 3, 2, 40),
        (1, "beta", 7, 3, 1, 10),
        (40, "beta", 7, 3, 9, 999),  # outside the default 30 days
    ]:
        ModelUsage.objects.create(
            day=today - timedelta(days=days_ago), model=model, api_key_id=key_id, api_key_prefix="vhk_abcd1234" if key_id else "",
            user_id=user_id, requests=requests, prompt_tokens=tokens, completion_tokens=tokens // 2, latency_ms=requests * 100,
        )  # fmt: skip
    url = reverse("admin:gateway_modelusage_changelist")
    page = admin_client.get(url).content.decode()
    assert page.count("<rect") >= 3 and "Tokens per day" in page and "Export CSV" in page
    assert 'id="usage-by-model"' in page and "vhk_abcd1234" in page
    by_model = page.split('id="usage-by-model"', 1)[1].split("</table>", 1)[0]
    assert ">alpha<" in by_model and ">6<" in by_model  # 4 + 2 requests in the period
    only_beta = admin_client.get(url, {"model": "beta"}).content.decode().split('id="usage-by-model"', 1)[1]
    assert ">alpha<" not in only_beta.split("</table>", 1)[0]

    exported = admin_client.get(url, {"format": "csv", "start": (today - timedelta(days=60)).isoformat()})
    assert exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert len(rows) == 4 and {r["model"] for r in rows} == {"alpha", "beta"}
    assert sum(int(r["requests"]) for r in rows) == 16 and rows[0]["day"] <= rows[-1]["day"]
    assert date.fromisoformat(rows[-1]["day"]) == today


def test_the_usage_page_flushes_on_demand(admin_client, settings):
    from chat.gateway.types import UsageRecord
    from chat.gateway.usage import local_usage, record_args

    settings.REDIS_URL = None  # counted in this process, as without Redis
    subject = type("S", (), {"api_key_id": None, "user_id": 5})()
    local_usage.add(
        *record_args(subject, UsageRecord(model="alpha"), cached=False, prompt_tokens=3, completion_tokens=2)
    )
    response = admin_client.post(reverse("admin:gateway_modelusage_changelist"), {"action": "flush"}, follow=True)
    assert "Flushed 1 request(s)" in response.content.decode()
    row = ModelUsage.objects.get(user_id=5)
    assert (row.model, row.requests, row.prompt_tokens, row.completion_tokens) == ("alpha", 1, 3, 2)
