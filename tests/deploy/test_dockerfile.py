"""deploy/Dockerfile: what the API image must be (no engine here to build it)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_it_is_multi_stage_on_python_311_slim() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE)
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    assert "COPY --from=build /opt/venv /opt/venv" in DOCKERFILE


def test_it_installs_with_the_lock_file_as_constraints() -> None:
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert "pip install -c requirements.lock" in runs
    assert "COPY pyproject.toml requirements.lock" in DOCKERFILE
    assert (REPO / "requirements.lock").is_file()


def test_it_runs_as_a_non_root_user_with_a_healthcheck_and_gunicorn() -> None:
    users = [args for word, args in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    health = next(args for word, args in instructions() if word == "HEALTHCHECK")
    assert "/healthz" in health
    cmd = [args for word, args in instructions() if word == "CMD"][-1]
    assert cmd == '["gunicorn", "config.asgi:application", "-c", "deploy/gunicorn.conf.py"]'
    assert "collectstatic" in DOCKERFILE


def test_the_build_context_keeps_what_the_image_needs() -> None:
    ignored = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/gunicorn.conf.py" in ignored
    for needed in ("config", "chat", "inference", "knowledge", "monitoring", "templates", "manage.py"):
        assert needed not in ignored


@pytest.mark.timeout(180)
def test_the_collectstatic_build_step_works_without_services(tmp_path) -> None:
    """The image runs collectstatic with DEBUG off, a throwaway key and no service env."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SECRET_KEY": secrets.token_urlsafe(64),
        "DEBUG": "0",
        "DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "static" / "admin").is_dir()
