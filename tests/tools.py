"""Tests that drive an external tool (Chromium, nginx, promtool) skip without it on a developer's
machine, and fail in CI (``CI`` set): the test command installs them, so a missing one there is a
broken install step, never a reason to skip."""

from __future__ import annotations

import os

import pytest


def need(available: bool, reason: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the test command must install it)")
    pytest.skip(reason)
