"""docs/operations.md covers every alert, and every alert points at its runbook entry."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.metric_names import ALERTS, REPO

pytestmark = pytest.mark.fast

DOC = (REPO / "docs" / "operations.md").read_text()


def alerts() -> list[dict]:
    rules = []
    for path in sorted(ALERTS.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def test_every_alert_has_a_runbook_row_and_anchor() -> None:
    for rule in alerts():
        name = rule["alert"]
        anchor = name.lower()
        assert f'<a id="{anchor}"></a>**{name}**' in DOC, f"docs/operations.md has no runbook row for {name}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{anchor}"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}


def test_the_required_sections_exist() -> None:
    for heading in (
        "## Deployment checklist",
        "## Operating checklist",
        "## Alert runbook",
        "## Capacity",
        "## Backup and restore",
        "## Rollback",
        "## Scaling",
        "## Tracing",
        "## Load test",
    ):
        assert heading in DOC, heading
    for must in ("pg_dump", "pg_restore", "point-in-time", "manage.py reindex", "_snapshot", "expand / contract"):
        assert must in DOC, must
