"""`make loadtest` end to end, briefly: the script starts its platform, Locust sends every kind of traffic.

A plumbing check (15 s at a low rate), not a measurement: the thresholds are not judged
(``LOADTEST_SMOKE=1``); the 5-minute runs and their figures are in docs/operations.md.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.live import REPO, free_port

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]


def test_make_loadtest_sends_the_whole_mix_and_reports_it(tmp_path):
    env = {
        **os.environ,
        "LOADTEST_RATE": "2",
        "LOADTEST_MULTIPLIERS": "1",
        "LOADTEST_RUN_S": "15",
        "LOADTEST_UPLOAD_EVERY_S": "5",
        "LOADTEST_OUT": str(tmp_path),
        "LOADTEST_PORT": str(free_port()),
        "LOADTEST_UPSTREAM_PORT": str(free_port()),
        "LOADTEST_SMOKE": "1",
    }
    done = subprocess.run(
        [str(REPO / "deploy" / "loadtest" / "run.sh")], cwd=REPO, env=env, capture_output=True, text=True, timeout=840
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "### 1x" in done.stdout and (tmp_path / "report.html").is_file() and (tmp_path / "locust-1x.html").is_file()

    run = json.loads((tmp_path / "samples-1x.json").read_text())
    names = {name for rtype, name, *_ in run["samples"] if rtype != "TTFT"}
    assert {"ws_chat", "rest_chat", "search", "upload"} <= names, names
    assert names & {"openai [stream]", "openai [json]"}, names
    ttft = {name for rtype, name, *_ in run["samples"] if rtype == "TTFT"}
    assert {"ws_chat", "rest_chat"} <= ttft, ttft
    failed = [(name, ms) for _rtype, name, ms, failed, _at in run["samples"] if failed]
    assert not failed, (failed, run["errors"])
