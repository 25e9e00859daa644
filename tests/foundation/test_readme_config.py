"""The README's configuration table names exactly the variables the code reads."""

from __future__ import annotations

import re

import pytest

from tests.live import REPO

READ = re.compile(r"""env_(?:str|opt|bool|int|float|list)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.M)


def _read_in_code() -> set[str]:
    names: set[str] = set()
    for path in REPO.glob("*/**/*.py"):
        if any(part in {".venv", ".local", "tests", "node_modules"} for part in path.parts):
            continue
        names |= set(READ.findall(path.read_text(encoding="utf-8")))
    return names


@pytest.mark.fast
def test_it_documents_every_variable_the_code_reads():
    documented = set(ROW.findall((REPO / "README.md").read_text(encoding="utf-8")))
    read = _read_in_code()
    assert read - documented == set(), "read in code but missing from the README table"
    assert documented - read == set(), "in the README table but read nowhere"
