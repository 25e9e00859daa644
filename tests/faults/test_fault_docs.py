"""docs/operations.md's fault table is the fault suite's output, and says what the suite checks."""

from __future__ import annotations

import re

import pytest

from tests.faults.report import HEADER, catalog
from tests.live import REPO

pytestmark = pytest.mark.fast


def _table() -> list[str]:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text.split("<!-- FAULT-TABLE -->", 1)[1].split("<!-- /FAULT-TABLE -->", 1)[0].strip()
    return block.splitlines()


def test_the_docs_show_a_row_per_fault_of_the_suite_as_it_printed_it():
    lines = _table()
    assert "\n".join(lines[:2]) == HEADER
    rows = lines[2:]
    faults = catalog()
    assert len(rows) == len(faults)
    for fault, row in zip(faults, rows, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(rf"{re.escape(fault.title)} \(\d+\.\d s\)", cells[0]), cells[0]
        assert cells[1] == fault.effect
        readyz = cells[4].split(",")[0]
        expected = {"ok": "200", "unavailable": "503"}.get(fault.readyz_during)
        assert expected is None or readyz == expected, (fault.key, cells[4])
        assert "hang" not in cells[2] and "http_500" not in cells[2] and "html" not in cells[2], cells[2]
