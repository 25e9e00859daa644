"""Startup refuses insecure production settings with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live import REPO

SETUP = "import django; django.setup(); print('started')"


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", SETUP],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.fast
def test_it_refuses_a_missing_secret_key_when_debug_is_off():
    result = _start({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.fast
@pytest.mark.parametrize("key", ["short", "django-insecure-" + "x" * 60, "a" * 60])
def test_it_refuses_an_insecure_secret_key_when_debug_is_off(key):
    result = _start({"DEBUG": "0", "SECRET_KEY": key})
    assert result.returncode != 0
    assert "SECRET_KEY is insecure" in result.stderr


@pytest.mark.fast
def test_it_starts_with_a_strong_key_or_in_debug():
    assert "started" in _start({"DEBUG": "0", "SECRET_KEY": "k" + "0123456789abcdef" * 4}).stdout
    assert "started" in _start({"DEBUG": "1"}).stdout


@pytest.mark.fast
def test_it_names_a_malformed_boolean():
    result = _start({"DEBUG": "maybe"})
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr
