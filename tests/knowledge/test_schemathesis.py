"""The OpenAPI schema (/api/schema/) against the live server, with schemathesis.

Every operation in the schema is called with generated requests (valid and invalid ones)
by a real API key holding every scope. Checks: no server error (5xx), and every response
conforms to the schema (status code documented, content type, headers, body).

Excluded: ``conversations_messages_create`` (POST .../messages/): each valid example makes
the LLM answer (seconds each on the test model); the chat API's behaviour is tested in
tests/chat. Everything else, the knowledge API, the chat conversations and feedback and
the export, is fuzzed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.knowledge.conftest import api_key

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

EXCLUDED_OPERATIONS = ["conversations_messages_create"]
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))


SEED_COLLECTIONS = ["fuzz", "fuzz-2", "fuzz-3"]
SEED_EXTERNAL_IDS = ["a", "b"]


def seed_config(ids: list[int]) -> str:
    """Half of the generated path parameters name things that exist, so the fuzzing reaches the
    operations' logic instead of stopping at 404s; the other half stay random."""
    quoted = ", ".join(f'"{v}"' for v in SEED_COLLECTIONS)
    return f"""
[dictionaries.collections]
values = [{quoted}]
[dictionaries.external_ids]
values = [{", ".join(f'"{v}"' for v in SEED_EXTERNAL_IDS)}]
[dictionaries.ids]
values = [{", ".join(str(i) for i in sorted(set(ids)))}]

[parameters]
"path.collection" = {{ dictionary = "collections", probability = 0.5 }}
"path.external_id" = {{ dictionary = "external_ids", probability = 0.5 }}
"path.id" = {{ dictionary = "ids", probability = 0.5 }}
"""


def schemathesis_cli() -> str:
    try:
        import schemathesis  # noqa: F401
    except ImportError:  # never skip: CI must run it (it is in the dev extras)
        pytest.fail("schemathesis is not installed: `deploy/local/bootstrap.sh --dev` installs the dev extras")
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists(), f"no schemathesis command next to {sys.executable}"
    return str(cli)


def test_the_api_conforms_to_its_openapi_schema(knowledge_live, django_user_model, tmp_path):
    cli = schemathesis_cli()
    operator = django_user_model.objects.create_user("fuzz", password="pw", is_staff=True, is_superuser=True)
    key = api_key(operator, "chat", "knowledge:read", "knowledge:write", "export")
    # Something to find: a collection and an indexed document (ids 1.. exist, slugs resolve).
    import httpx

    api = httpx.Client(base_url=f"{knowledge_live.url}/api/knowledge", headers={"Authorization": f"Bearer {key}"})
    ids: list[int] = []
    for slug in SEED_COLLECTIONS:
        assert api.post("/collections/", json={"name": slug, "slug": slug}).status_code == 201
        for external_id in SEED_EXTERNAL_IDS:
            synced = api.put(f"/collections/{slug}/documents/by-external-id/{external_id}/", json={"text": f"빈집 {slug} {external_id}"})  # fmt: skip
            assert synced.status_code == 201, synced.text
            ids += [synced.json()["document"]["id"], synced.json()["job_id"]]
    config = tmp_path / "schemathesis.toml"
    config.write_text(seed_config(ids))

    argv = [
        cli, "--config-file", str(config), "run", f"{knowledge_live.url}/api/schema/",
        "--header", f"Authorization: Bearer {key}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261205"),
        "--request-timeout", "30",
        "--workers", "2",
        "--suppress-health-check", "all",
        "--report", "junit",
        "--report-junit-path", str(tmp_path / "schemathesis.xml"),
    ]  # fmt: skip
    for operation in EXCLUDED_OPERATIONS:
        argv += ["--exclude-operation-id", operation]
    result = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"}
    )  # cwd: schemathesis keeps its example database in ./.schemathesis
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, f"schemathesis found problems:\n{output[-20000:]}"
    assert "No issues found" in output or " passed" in output, output[-3000:]
