"""deploy/validate's parts, run by the test command: promtool, Kubernetes schemas, compose, nginx.

Each part installs its tool once when missing (see deploy/validate); a part whose
tool cannot be had here is skipped with the reason deploy/validate printed.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.deploy.metric_names import REPO
from tests.tools import need

pytestmark = pytest.mark.fast


@pytest.mark.timeout(600)
@pytest.mark.parametrize("part", ["prometheus", "grafana", "k8s", "compose", "nginx"])
def test_deploy_validate_part_passes(part: str) -> None:
    result = subprocess.run(
        [str(REPO / "deploy" / "validate"), part],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=580,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    need("SKIPPED" not in output, output.strip().splitlines()[-1])


def test_deploy_validate_refuses_an_unknown_part() -> None:
    result = subprocess.run([str(REPO / "deploy" / "validate"), "nope"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown part" in result.stderr


@pytest.mark.timeout(120)
def test_promtool_rule_tests_fail_when_an_alert_is_broken(tmp_path) -> None:
    """The alert unit tests have teeth: raising a threshold makes them fail."""
    import shutil

    need(bool(shutil.which("promtool")), "promtool not installed (deploy/local/install prometheus)")
    (tmp_path / "alerts").mkdir()
    (tmp_path / "tests").mkdir()
    rules = (REPO / "deploy/prometheus/alerts/llm-alerts.yml").read_text()
    assert "> 0.01" in rules
    (tmp_path / "alerts/llm-alerts.yml").write_text(rules.replace("> 0.01", "> 0.5"))
    shutil.copy(REPO / "deploy/prometheus/tests/llm-alerts-test.yml", tmp_path / "tests")
    result = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "tests/llm-alerts-test.yml")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "HighErrorRate" in result.stdout + result.stderr
