"""deploy/gunicorn.conf.py: worker sizing, multiprocess metrics hooks, and a real boot."""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

from tests.deploy.metric_names import REPO

pytestmark = pytest.mark.fast

CONF = REPO / "deploy" / "gunicorn.conf.py"


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch):
    """Loading the config edits os.environ (ALLOWED_HOSTS); keep that inside the test."""
    for name in ("ALLOWED_HOSTS", "POD_IP", "ALLOWED_HOSTS_ADD_OWN_IP", "WEB_CONCURRENCY"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:  # setenv records the absence, so a value set by the config is removed afterwards
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)


def load_conf() -> dict:
    return runpy.run_path(str(CONF))


def test_it_runs_uvicorn_workers_one_per_usable_cpu(monkeypatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    conf = load_conf()
    assert conf["worker_class"] == "config.workers.UvicornWorker"
    assert conf["workers"] == conf["_usable_cpus"]()
    assert 1 <= conf["workers"] <= (os.cpu_count() or 1)
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert load_conf()["workers"] == 3


def test_it_allows_the_containers_own_addresses(monkeypatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "chat.example.org")
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    load_conf()
    hosts = os.environ["ALLOWED_HOSTS"].split(",")
    assert hosts[0] == "chat.example.org"
    assert {"10.1.2.3", "127.0.0.1", "localhost", "[::1]"} <= set(hosts)

    monkeypatch.setenv("ALLOWED_HOSTS", "chat.example.org")
    monkeypatch.setenv("ALLOWED_HOSTS_ADD_OWN_IP", "0")
    load_conf()
    assert os.environ["ALLOWED_HOSTS"] == "chat.example.org"


def test_hooks_clean_the_metrics_directory_and_mark_dead_workers(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    conf = load_conf()
    server = SimpleNamespace(log=SimpleNamespace(warning=lambda *a: None))
    (tmp_path / "mp").mkdir()
    (tmp_path / "mp" / "counter_999.db").write_bytes(b"stale")
    conf["on_starting"](server)
    assert list((tmp_path / "mp").iterdir()) == []

    live = tmp_path / "mp" / "gauge_livesum_4242.db"
    live.write_bytes(b"")
    conf["child_exit"](server, SimpleNamespace(pid=4242))
    assert not live.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(90)
def test_two_workers_serve_one_aggregated_metrics_page(tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp"),
        "WEB_CONCURRENCY": "2",
        "PORT": str(port),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "DEBUG": os.environ.get("DEBUG", "1"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.asgi:application", "-c", str(CONF)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.3)
        with httpx.Client(timeout=5) as client:
            for _ in range(20):  # new connections spread over both workers
                client.get(f"{url}/healthz", headers={"Connection": "close"})
            text = client.get(f"{url}/metrics").text
        # One page aggregated from every worker's files, with the sampled process metrics.
        assert "api_worker_cpu_seconds_total" in text
        assert "api_worker_resident_memory_bytes" in text
        assert len({p.name.split("_")[-1] for p in (tmp_path / "mp").glob("*.db")}) >= 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_worker_tunes_the_interpreter_before_serving() -> None:
    """config.workers.UvicornWorker.run: GIL switch interval, start-up objects frozen, GC thresholds.

    In a child interpreter (this one's GC settings stay as they are); the serving loop
    (uvicorn-worker's run) is replaced by a no-op, the rest is the worker's own code.
    """
    code = (
        "import gc, json, sys, uvicorn_worker\n"
        "uvicorn_worker.UvicornWorker.run = lambda self: None\n"
        "from config.workers import UvicornWorker\n"
        "import django.db.models  # something to freeze, as a loaded application would have\n"
        "UvicornWorker.run(object.__new__(UvicornWorker))\n"
        "print(json.dumps([gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    thresholds, frozen, switch = json.loads(out)
    from config.workers import UvicornWorker

    assert tuple(thresholds) == UvicornWorker.GC_THRESHOLDS
    assert frozen > 10_000  # the imported modules' objects left out of every collection
    assert switch == UvicornWorker.GIL_SWITCH_INTERVAL_S
