"""The endpoint and model-group admin: write-only, encrypted API key, validation, "check now", commands."""

from __future__ import annotations

import socket

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from inference.models import ModelEndpoint, ModelGroup
from tests.inference.scripted_upstream import running_in_thread

pytestmark = [pytest.mark.fast, pytest.mark.django_db]

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def qwen() -> ModelGroup:
    return ModelGroup.objects.create(name="qwen")


def form_data(**overrides) -> dict:
    data = {
        "name": "gpu-a",
        "kind": "generation",
        "group": str(ModelGroup.objects.get_or_create(name="qwen")[0].pk),
        "protocol": "openai",
        "base_url": "http://10.0.0.5:8000/v1",
        "model_name": "qwen",
        "enabled": "on",
        "priority": "0",
        "weight": "100",
        "max_concurrent": "16",
        "max_queue": "64",
        "connect_timeout_s": "3",
        "read_timeout_s": "60",
        "total_timeout_s": "300",
        "default_params": "{}",
        "context_window": "",
        "new_api_key": "",
    }
    data.update(overrides)
    return data


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stored(endpoint: ModelEndpoint) -> str:
    """The api_key column as the database holds it (the model field decrypts)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT api_key FROM {ModelEndpoint._meta.db_table} WHERE id = %s", [endpoint.pk])
        return cursor.fetchone()[0]


def test_it_stores_the_api_key_encrypted_without_ever_showing_it(admin_client):
    response = admin_client.post(reverse("admin:inference_modelendpoint_add"), form_data(new_api_key=SECRET))
    assert response.status_code == 302, response.content[:2000]
    endpoint = ModelEndpoint.objects.get(name="gpu-a")
    assert endpoint.api_key == SECRET and endpoint.group.name == "qwen"
    stored = _stored(endpoint)
    assert stored.startswith("fernet:") and SECRET not in stored and SECRET[:4] not in stored
    page = admin_client.get(reverse("admin:inference_modelendpoint_change", args=[endpoint.pk])).content.decode()
    # Not the key, nor any of its characters: only that one is set.
    assert SECRET not in page and "sk-l" not in page and "set (hidden)" in page
    listing = admin_client.get(reverse("admin:inference_modelendpoint_changelist")).content.decode()
    assert SECRET not in listing


def test_keys_are_encrypted_under_the_configured_key_and_rotate(settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from inference import secrets

    group = ModelGroup.objects.create(name="g")
    old, new = Fernet.generate_key().decode(), "a passphrase of any length, stretched by HKDF"
    settings.INFERENCE_ENCRYPTION_KEYS = [old]
    endpoint = ModelEndpoint.objects.create(
        name="e", kind="generation", protocol="openai", base_url="http://h:1/v1", api_key=SECRET, group=group
    )
    before = _stored(endpoint)
    settings.INFERENCE_ENCRYPTION_KEYS = [new, old]  # rotation: the new key first, the old one still reads
    assert ModelEndpoint.objects.get(pk=endpoint.pk).api_key == SECRET
    call_command("rotate_endpoint_keys")
    after = _stored(endpoint)
    assert after != before and after.startswith("fernet:")
    settings.INFERENCE_ENCRYPTION_KEYS = [new]  # the old key dropped: still readable
    assert ModelEndpoint.objects.get(pk=endpoint.pk).api_key == SECRET
    settings.INFERENCE_ENCRYPTION_KEYS = [old]  # a key that never wrote it: unreadable, never a crash
    assert ModelEndpoint.objects.get(pk=endpoint.pk).api_key == ""
    assert secrets.decrypt("plain-legacy-key") == "plain-legacy-key"  # rows from before encryption


def test_a_blank_key_keeps_the_current_one_and_clear_removes_it(admin_client, qwen):
    endpoint = ModelEndpoint.objects.create(
        name="gpu-a", kind="generation", protocol="openai", base_url="http://h:1/v1", api_key=SECRET, group=qwen
    )
    url = reverse("admin:inference_modelendpoint_change", args=[endpoint.pk])
    assert admin_client.post(url, form_data(weight="5")).status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.api_key, endpoint.weight) == (SECRET, 5)
    assert admin_client.post(url, form_data(clear_api_key="on")).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.api_key == ""


def test_it_refuses_inconsistent_endpoints(admin_client):
    url = reverse("admin:inference_modelendpoint_add")
    response = admin_client.post(url, form_data(protocol="triton_http"))
    assert response.status_code == 200 and "OpenAI-compatible protocol" in response.content.decode()
    response = admin_client.post(url, form_data(base_url="10.0.0.5:8000"))
    assert "http:// or https://" in response.content.decode()
    response = admin_client.post(url, form_data(read_timeout_s="500"))
    assert "cannot exceed the total timeout" in response.content.decode()
    response = admin_client.post(url, form_data(group=""))
    assert "serves a model group" in response.content.decode()
    # (Endpoints synced from VLLM_URL / TRITON_URL may exist; none of the refused ones does.)
    assert not ModelEndpoint.objects.filter(name="gpu-a").exists()


def test_check_now_records_status_latency_and_error(admin_client):
    with running_in_thread() as upstream:
        up = ModelEndpoint.objects.create(
            name="up", kind="generation", protocol="openai", base_url=upstream.base_url, model_name="scripted-model"
        )
        down = ModelEndpoint.objects.create(
            name="down", kind="generation", protocol="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1"
        )
        wrong = ModelEndpoint.objects.create(
            name="wrong-model", kind="generation", protocol="openai", base_url=upstream.base_url, model_name="nope"
        )
        response = admin_client.post(
            reverse("admin:inference_modelendpoint_changelist"),
            {"action": "check_now", "_selected_action": [up.pk, down.pk, wrong.pk]},
            follow=True,
        )
    text = response.content.decode()
    assert "Up: up" in text and "Down: down" in text  # the admin capitalises messages
    for row in (up, down, wrong):
        row.refresh_from_db()
    assert up.healthy is True and up.last_latency_ms > 0 and up.last_error == ""
    assert down.healthy is False and "connect" in down.last_error.lower()
    assert wrong.healthy is False and "not served" in wrong.last_error
    listing = admin_client.get(reverse("admin:inference_modelendpoint_changelist")).content.decode()
    assert "● up" in listing and "● down" in listing


def test_check_endpoints_command_fails_when_an_endpoint_is_down():
    ModelEndpoint.objects.create(
        name="down", kind="generation", protocol="openai", base_url=f"http://127.0.0.1:{closed_port()}/v1"
    )
    with pytest.raises(CommandError, match="1 endpoint"):
        call_command("check_endpoints", "--timeout", "2")
    assert ModelEndpoint.objects.get(name="down").healthy is False


def test_sync_endpoints_follows_the_environment(settings):
    settings.VLLM_URL = None
    settings.TRITON_URL = None
    call_command("sync_endpoints")
    assert set(ModelEndpoint.objects.values_list("name", flat=True)) == {"local-llm"}
    local = ModelEndpoint.objects.get(name="local-llm")
    assert local.base_url == settings.LOCAL_LLM_URL and local.source == "env"
    # Its model group is named after the local model; the embedding model has one too.
    assert local.group.name == settings.LOCAL_LLM_MODEL == "smollm2" and local.group.source == "env"
    ModelGroup.objects.filter(name="smollm2").update(aliases="default, small")  # an operator's edit

    settings.VLLM_URL = "http://gpu:8000/v1"
    settings.VLLM_MODEL = "qwen"
    settings.VLLM_API_KEY = "sk-x"
    settings.TRITON_URL = "http://triton:8000"
    settings.TRITON_PROTOCOL = "grpc"
    settings.TRITON_GRPC_URL = "triton:8001"
    settings.TRITON_RERANKER_MODEL = ""  # the default: no reranker ships (docs/answer-quality.md)
    call_command("sync_endpoints")
    assert set(ModelEndpoint.objects.values_list("name", flat=True)) == {"vllm", "triton-embedding"}
    settings.TRITON_RERANKER_MODEL = "reranker"  # an operator deployed a cross-encoder
    call_command("sync_endpoints")
    rows = {r.name: r for r in ModelEndpoint.objects.all()}
    assert set(rows) == {"vllm", "triton-embedding", "triton-reranker"}  # local-llm went with VLLM_URL set
    assert (rows["vllm"].model_name, rows["vllm"].api_key) == ("qwen", "sk-x")
    assert (rows["triton-embedding"].protocol, rows["triton-embedding"].base_url) == ("triton_grpc", "triton:8001")
    # VLLM_MODEL names the group: the env group was renamed, keeping what the operator attached to it.
    assert rows["vllm"].group.name == "qwen" and rows["vllm"].group.aliases == "default, small"
    assert rows["triton-embedding"].group is None
    assert set(ModelGroup.objects.values_list("name", "kind")) == {
        ("qwen", "generation"),
        (settings.INFERENCE_EMBEDDING_MODEL_NAME, "embedding"),
    }

    # An admin-made endpoint of the same name is left alone.
    ModelEndpoint.objects.filter(name="vllm").update(source="admin", base_url="http://mine:1/v1")
    call_command("sync_endpoints")
    assert ModelEndpoint.objects.get(name="vllm").base_url == "http://mine:1/v1"


def test_model_groups_refuse_clashing_names_and_unknown_fallbacks(admin_client):
    ModelGroup.objects.create(name="big", aliases="large")
    url = reverse("admin:inference_modelgroup_add")
    base = {
        "name": "small",
        "kind": "generation",
        "aliases": "",
        "fallbacks": "",
        "context_window": "",
        "enabled": "on",
    }
    base |= {"endpoints-TOTAL_FORMS": "0", "endpoints-INITIAL_FORMS": "0"}  # the (read-only) endpoints inline
    for field, value, message in [
        ("aliases", "large", "Already used by another group: large"),
        ("aliases", "big", "Already used by another group: big"),
        ("aliases", "small", "An alias repeats the model name"),
        ("aliases", "has space", "Not a valid model name"),
        ("fallbacks", "nope", "No generation group named: nope"),
        ("fallbacks", "small", "cannot fall back to itself"),
        ("name", "a|b", "Letters, digits"),
    ]:
        response = admin_client.post(url, {**base, field: value})
        assert response.status_code == 200 and message in response.content.decode(), (field, value)
    response = admin_client.post(url, {**base, "aliases": "tiny, mini", "fallbacks": "big"})
    assert response.status_code == 302, response.content[:2000]
    small = ModelGroup.objects.get(name="small")
    assert (small.alias_list, small.fallback_list) == (["tiny", "mini"], ["big"])
    listing = admin_client.get(reverse("admin:inference_modelgroup_changelist")).content.decode()
    assert "small" in listing and "big" in listing
