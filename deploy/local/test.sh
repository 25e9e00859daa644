#!/usr/bin/env bash
# `make test`: lint, then the whole suite against the real services.
# Installs and starts PostgreSQL, Redis (+ a Redis Cluster), Elasticsearch, Triton and
# the llama.cpp server (deploy/local/up), runs pytest against them, and stops what it
# started, also when tests fail. Exit status: pytest's (0 = all passed).
# Extra arguments go to pytest, e.g. `deploy/local/test.sh tests/chat -x`.
#
# Jaeger (the tracing tests) is built with Go the first time, ~8.5 minutes: that build runs
# in the background from the start, niced, overlapping the rest of the run; the tracing
# tests wait for it and start Jaeger themselves (`deploy/local/up jaeger`).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh
mkdir -p "$LOG_DIR" "$RUN_DIR"
JAEGER_BUILD_PID="$RUN_DIR/jaeger-install.pid"
build_started=0
if ! jaeger_built && ! pid_alive "$JAEGER_BUILD_PID"; then
  echo "test: building Jaeger in the background (log .local/logs/jaeger-install.log)"
  # Its own session, so the exit trap can end the build with its go children.
  nice -n 10 setsid deploy/local/jaeger install >"$LOG_DIR/jaeger-install.log" 2>&1 </dev/null &
  echo $! >"$JAEGER_BUILD_PID"
  build_started=1
fi

deploy/local/bootstrap.sh --dev

echo "test: ruff check + format check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "test: import layers (lint-imports, contract in pyproject.toml)"
.venv/bin/lint-imports --no-cache

# Every service but Jaeger now; the tracing tests start Jaeger once it is built.
SERVICES=()
for s in "${ALL_SERVICES[@]}"; do [[ "$s" == jaeger ]] || SERVICES+=("$s"); done

started_here=0
jaeger_started_here=0
stop_services() {
  if ((build_started)) && pid_alive "$JAEGER_BUILD_PID"; then
    echo "test: stopping the unfinished Jaeger build (the Go caches in .local keep its progress)"
    kill -TERM -- "-$(cat "$JAEGER_BUILD_PID")" 2>/dev/null || true
  fi
  ((build_started)) && rm -f "$JAEGER_BUILD_PID"
  if [[ -z "${KEEP_SERVICES:-}" ]]; then
    if ((started_here)); then
      echo "test: stopping the services started for this run"
      deploy/local/down "${SERVICES[@]}" || true
    fi
    if ((jaeger_started_here)); then deploy/local/down jaeger || true; fi
  fi
}
trap stop_services EXIT

# Remember whether the services were already running (then leave them running).
if ! deploy/local/status --quiet "${SERVICES[@]}"; then
  started_here=1
fi
if ! deploy/local/status --quiet jaeger; then
  jaeger_started_here=1
fi
echo "test: tools the tests drive (Chromium for the browser tests, nginx for the shipped config's)"
deploy/local/install chromium nginx
echo "test: starting services (deploy/local/up)"
deploy/local/up "${SERVICES[@]}"

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
