#!/usr/bin/env bash
# `make test`: lint, then the whole suite against the real services.
# Installs and starts PostgreSQL, Redis (+ a Redis Cluster), Elasticsearch, Triton and
# the llama.cpp server (deploy/local/up), runs pytest against them, and stops what it
# started, also when tests fail. Exit status: pytest's (0 = all passed).
# Extra arguments go to pytest, e.g. `deploy/local/test.sh tests/chat -x`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

deploy/local/bootstrap.sh --dev

echo "test: ruff check + format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: import layers (lint-imports, contract in pyproject.toml)"
.venv/bin/lint-imports --no-cache

started_here=0
stop_services() {
  if [[ "$started_here" == 1 && -z "${KEEP_SERVICES:-}" ]]; then
    echo "test: stopping the services started for this run"
    deploy/local/down || true
  fi
}
trap stop_services EXIT

# Remember whether the services were already running (then leave them running).
if ! deploy/local/status --quiet; then
  started_here=1
fi
echo "test: tools the tests drive (Chromium for the browser tests, nginx for the shipped config's)"
deploy/local/install chromium nginx
echo "test: starting services (deploy/local/up)"
deploy/local/up

set -a
# shellcheck disable=SC1091
. .local/services.env
set +a
export CI_REQUIRE_SERVICES=1
export DEBUG=0
export SECRET_KEY="test-only-secret-$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 60)"
export DATA_DIR="$REPO/.local/test-data"
mkdir -p "$DATA_DIR"

echo "test: pytest"
set +e
.venv/bin/pytest "$@"
status=$?
set -e
exit "$status"
