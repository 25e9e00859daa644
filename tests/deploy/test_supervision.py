"""A crashed ingestion worker comes back: compose, Kubernetes and `make run` each restart it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

DEPLOY = REPO / "deploy"


def test_compose_restarts_the_worker_and_kubernetes_runs_it_as_a_deployment() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["restart"] == "unless-stopped"
    worker = yaml.safe_load((DEPLOY / "k8s" / "worker.yaml").read_text())
    assert worker["kind"] == "Deployment"
    assert worker["spec"]["template"]["spec"].get("restartPolicy", "Always") == "Always"


def test_make_run_supervises_the_worker() -> None:
    run = (DEPLOY / "local" / "run.sh").read_text()
    assert "deploy/local/supervise.py --name knowledge_worker -- $PY manage.py knowledge_worker" in run


def test_supervise_restarts_a_command_that_exits_and_stops_on_sigterm(tmp_path) -> None:
    runs = tmp_path / "runs"
    child = f"import sys; open({str(runs)!r}, 'a').write('x'); sys.exit(3)"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DEPLOY / "local" / "supervise.py"),
            "--name",
            "crasher",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(runs.read_text() if runs.exists() else "") < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert len(runs.read_text()) >= 2  # it ran again after exiting
    assert b"crasher exited with status 3" in proc.stderr.read()
