"""deploy/.env.example names every environment variable the platform reads."""

from __future__ import annotations

import re

import pytest

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

# Read through config/env.py helpers (the rule), or os.environ in the few places
# outside settings (management commands, the gunicorn config).
_HELPER = re.compile(r"\benv_(?:str|bool|int|float|list|opt|choice)\(\s*\"([A-Z][A-Z0-9_]*)\"")
_ENVIRON = re.compile(r"os\.environ(?:\.get)?[\(\[]\s*\"([A-Z][A-Z0-9_]*)\"")
_GUNICORN = re.compile(r"_env_int\(\s*\"([A-Z][A-Z0-9_]*)\"")
_NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE"}


def variables_read() -> dict[str, str]:
    found: dict[str, str] = {}
    sources = [p for d in ("config", "chat", "inference", "knowledge", "monitoring") for p in (REPO / d).rglob("*.py")]
    for path in [*sources, REPO / "deploy" / "gunicorn.conf.py"]:
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        for pattern in (_HELPER, _ENVIRON, _GUNICORN):
            for name in pattern.findall(text):
                found.setdefault(name, str(path.relative_to(REPO)))
    return {k: v for k, v in found.items() if k not in _NOT_SETTINGS}


def variables_listed() -> set[str]:
    text = (REPO / "deploy" / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def test_it_finds_the_settings_variables() -> None:
    read = variables_read()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ES_URL", "VLLM_URL", "TRITON_URL", "WEB_CONCURRENCY"} <= set(
        read
    )


def test_env_example_lists_every_variable_the_platform_reads() -> None:
    missing = {name: where for name, where in variables_read().items() if name not in variables_listed()}
    assert not missing, f"add these to deploy/.env.example (name, default, meaning): {missing}"


def test_env_example_sets_no_real_secret() -> None:
    text = (REPO / "deploy" / ".env.example").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "VLLM_API_KEY", "HF_TOKEN"):
        assert re.search(rf"^{name}=$", text, re.MULTILINE), f"{name} must be left empty in the example"
