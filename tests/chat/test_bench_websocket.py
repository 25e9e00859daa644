"""The websocket benchmark still runs: a few clients for a few seconds, every answer complete.

The figures themselves are not asserted (benchmarks print numbers; timing assertions on a
shared box are noise). What is checked: the script starts the upstream and the production
server (gunicorn + the platform's uvicorn worker), clients connect and get whole answers
whose tokens carry the upstream's timestamps, and nothing errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
BENCH_DB = "vh_bench_smoke"


def _bench_database_url() -> str:
    """A database of its own: the script migrates it and commits settings outside any test transaction."""
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return f"{base}/{BENCH_DB}"


def test_the_websocket_bench_runs_and_every_answer_completes() -> None:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("the bench needs PostgreSQL")
    env = {**os.environ, "DATABASE_URL": _bench_database_url()}
    argv = [sys.executable, "tests/bench/bench_websocket.py", "--clients", "4", "--duration", "3"]
    argv += ["--ramp-s", "0.5", "--chunks", "8", "--delay-ms", "20", "--workers", "1", "--load-procs", "1"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    (level,) = summary["levels"]
    assert level["connected"] == 4
    assert level["errors"] == {}
    assert level["answers_per_s"] > 0
    assert level["tokens_per_s"] > 0
    # Token texts are the upstream's timestamps: a delay was measured for each one.
    assert level["added_p50_ms"] is not None and level["added_p50_ms"] >= 0
