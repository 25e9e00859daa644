"""The README's configuration table names exactly the variables the code reads."""

from __future__ import annotations

import re

import pytest

from tests.live import REPO

# The typed helpers of config/env.py (not the launchers' own helpers, documented apart).
READ = re.compile(r"""(?<![A-Za-z_])env_(?:str|opt|bool|int|float|list|choice)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
APPS = ("config", "chat", "knowledge", "inference", "monitoring")
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.M)


def _read_in_code() -> set[str]:
    names: set[str] = set()
    for app in APPS:
        for path in (REPO / app).rglob("*.py"):
            names |= set(READ.findall(path.read_text(encoding="utf-8")))
    return names


@pytest.mark.fast
def test_it_documents_every_variable_the_code_reads():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- CONFIG-TABLE -->", 1)[1].split("<!-- /CONFIG-TABLE -->", 1)[0]
    documented = set(ROW.findall(table))
    read = _read_in_code()
    assert read - documented == set(), "read in code but missing from the README table"
    assert documented - read == set(), "in the README table but read nowhere"
