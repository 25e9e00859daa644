"""docs/api.md runs as written: its ``bash`` blocks in order in one shell, then each ``python``
block, against a live server (real PostgreSQL, Elasticsearch, Triton, Redis and llama.cpp).

The test only provides what the guide says the operator provides (the users ``integrator``
and ``operator`` with their permissions) and sets ``BASE_URL``; the key is the one the
guide's own ``create_api_key`` step prints, read back from the shell for the Python blocks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission

from chat.models import ChatSettings, Conversation, Message
from knowledge.models import Document
from tests import live

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

GUIDE = live.REPO / "docs" / "api.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(GUIDE.read_text()) if lang == language]


@pytest.fixture
def operators_setup(django_user_model):
    """What the guide's step 1 asks of an operator: the integration's user and its permissions."""
    integrator = django_user_model.objects.create_user("integrator", password="pw")
    integrator.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_collection", "change_collection", "delete_collection", "add_document"]
        )
    )
    django_user_model.objects.create_user("operator", password="pw", is_staff=True)
    # Answers sized for the small test model (one 2k-token llama.cpp slot).
    ChatSettings(pk=1, system_prompt="Answer in one short sentence from the sources.", top_k=2, rerank_enabled=False,
                 history_token_budget=120, context_window=1024, max_tokens=48).save()  # fmt: skip
    from inference.services import endpoints_sync_from_env

    endpoints_sync_from_env()


def test_the_walkthrough_runs_as_written(knowledge_live, operators_setup, tmp_path):
    bash, python = blocks("bash"), blocks("python")
    assert len(bash) >= 8 and len(python) >= 2, "docs/api.md lost its runnable blocks"
    env = {
        **os.environ,
        "BASE_URL": knowledge_live.url,
        # manage.py (the key step) runs against the live server's database.
        "DATABASE_URL": live.test_database_url(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TMPDIR": str(tmp_path),
    }
    env.pop("API_KEY", None)
    key_file = tmp_path / "api-key"
    script = "\n\n".join(bash) + f'\nprintf "%s" "$API_KEY" > {key_file}\n'
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=live.REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert shell.returncode == 0, f"bash blocks failed:\n{shell.stdout[-4000:]}\n{shell.stderr[-4000:]}"
    out = shell.stdout
    print(out)
    assert '"scopes":["chat","knowledge:read","knowledge:write"]' in out.replace(" ", "")
    assert "True\n" in out and "False\n" in out  # created, then unchanged
    assert "job: done, 100%" in out
    assert "Demolition subsidy 2025" in out  # the search's top hit and the answer's first citation
    assert "assistant" in out and "204" in out
    assert "conversation_id,conversation_created_at" in out  # the CSV export's header

    api_key = key_file.read_text()
    assert api_key.startswith("vhk_")
    for code in python:
        run = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, "API_KEY": api_key},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"python block failed:\n{code[:300]}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    synced = Document.objects.filter(collection__slug="partner-policies")
    assert set(synced.values_list("external_id", flat=True)) == {"policy-2025-001", "policy-2025-002"}
    assert set(synced.values_list("status", flat=True)) == {"indexed"}
    answers = Message.objects.filter(role="assistant", status="complete")
    assert answers.count() >= 2 and Conversation.objects.count() >= 2
