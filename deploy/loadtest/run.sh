#!/usr/bin/env bash
# `make loadtest`: the pre-release load test (Locust, headless) at 1x and 2x the target rate.
# docs/operations.md, "Load test", has the method and the figures of a run.
#
#   make loadtest                                   # local: starts a platform on the scripted upstream
#   LOADTEST_RUN_S=60 make loadtest                 # shorter runs
#   LOADTEST_HOST=https://chat.example.org LOADTEST_API_KEY=vhk_... LOADTEST_SESSION=... make loadtest
#                                                   # a running deployment (nothing started here)
#
# Knobs (environment): LOADTEST_RATE (requests/s at 1x, default 2: the local setup's target),
# LOADTEST_MULTIPLIERS (1,2), LOADTEST_RUN_S (300 per multiplier), LOADTEST_OUT (report folder,
# default .local/loadtest/<time>), LOADTEST_UPLOAD_EVERY_S (30), LOADTEST_WORKERS (gunicorn workers of
# the local platform, 2), LOADTEST_TOKENS / LOADTEST_TOKEN_MS (the scripted upstream's answer:
# 32 tokens, 25 ms apart), LOADTEST_SMOKE=1 (no report thresholds: a plumbing check),
# LOADTEST_TRACE=1 (the local platform sends traces to the local Jaeger, service vh-loadtest:
# 10 % of requests plus every one slower than 3 s, to see which step was slow).
#
# Locally the platform runs as in production (gunicorn + uvicorn workers, DEBUG=0, the ingestion
# worker) on its own database (vh_loadtest), Redis key prefix and search index, against the real
# PostgreSQL, Redis, Elasticsearch and Triton of deploy/local, with the scripted streaming upstream
# (tests/bench/stamped_upstream.py) as its LLM: it measures the platform, not a model. Against a
# deployment with a real vLLM it measures the deployment. Exit status: report.py's (1: a threshold
# failed). Everything started here is stopped at the end.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

RATE="${LOADTEST_RATE:-2}"
MULTIPLIERS="${LOADTEST_MULTIPLIERS:-1,2}"
RUN_S="${LOADTEST_RUN_S:-300}"
OUT="${LOADTEST_OUT:-$LOCAL_DIR/loadtest/$(date +%Y%m%d-%H%M%S)}"
VENV="$LOCAL_DIR/loadtest-venv"
PORT="${LOADTEST_PORT:-8400}"
UP_PORT="${LOADTEST_UPSTREAM_PORT:-9140}"
mkdir -p "$OUT" "$LOG_DIR"

# --- the load generator's venv (Locust; gevent stays out of the platform's venv) -------------------
REQ="$REPO/deploy/loadtest/requirements.txt"
# A venv whose interpreter no longer runs (made at another path, the python it came from gone)
# is made again: its scripts' #! lines name that path.
if ! "$VENV/bin/python" -c 'import locust' >/dev/null 2>&1 || ! cmp -s "$REQ" "$VENV/.requirements" ||
  ! head -n1 "$VENV/bin/locust" 2>/dev/null | grep -qF "$VENV/bin/python"; then
  log "loadtest: installing Locust into $VENV"
  "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1 && head -n1 "$VENV/bin/locust" 2>/dev/null | grep -qF "$VENV/bin/python" ||
    { rm -rf "$VENV" && "$(host_python)" -m venv "$VENV"; }
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.requirements"
fi
[[ "${1:-}" == "--install-only" ]] && exit 0

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$p" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

start() { # name cmd...: in its own session (so it stops with its children), log in $OUT
  local name="$1"
  shift
  setsid "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}

HOST="${LOADTEST_HOST:-}"
if [[ -z "$HOST" ]]; then
  # --- a local platform on the scripted upstream ----------------------------------------------------
  [[ -x .venv/bin/python ]] || deploy/local/bootstrap.sh
  deploy/local/up postgres redis elasticsearch triton
  set -a
  # shellcheck disable=SC1091
  . "$ENV_FILE"
  set +a
  unset VLLM_URL VLLM_MODEL OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  if [[ "${LOADTEST_TRACE:-0}" == 1 ]]; then
    deploy/local/up jaeger
    export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT" OTEL_SERVICE_NAME=vh-loadtest
    export TRACING_KEEP_SLOW_S="${TRACING_KEEP_SLOW_S:-3}"
  fi
  export DATABASE_URL="postgres://vh:vh@127.0.0.1:$PG_PORT/vh_loadtest"
  export REDIS_KEY_PREFIX=vhload SEARCH_INDEX_ALIAS=vh-loadtest
  export VLLM_URL="http://127.0.0.1:$UP_PORT/v1" VLLM_MODEL=fake-model
  export DEBUG=0 LOG_LEVEL=WARNING ALLOWED_HOSTS=127.0.0.1,localhost ALLOWED_HOSTS_ADD_OWN_IP=0
  export SECRET_KEY="${SECRET_KEY:-$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 64)}"
  export WEB_CONCURRENCY="${LOADTEST_WORKERS:-2}" GUNICORN_BIND="127.0.0.1:$PORT"
  export PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus-multiproc"
  export DATA_DIR="$LOCAL_DIR/loadtest-data"
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR" "$DATA_DIR"
  # Every kind of request retrieves (chat and OpenAI answers, search). Reranking is off here by
  # default: the local reranker is a CPU stand-in (e5 cosine of each query/passage pair, ~35
  # texts/s on these 2 cores) that costs 1 + 2 x KNOWLEDGE_RERANK_CANDIDATES encodings per
  # request, so it, not the platform, would be measured (a GPU Triton takes milliseconds).
  # LOADTEST_RERANK=1 puts it back (the local target rate is then ~0.5 requests/s).
  export LOADTEST_RERANK="${LOADTEST_RERANK:-0}"
  [[ "$LOADTEST_RERANK" == 1 ]] || export KNOWLEDGE_RERANK_DEFAULT=0

  (cd /tmp && PGPASSWORD=vh psql -h 127.0.0.1 -p "$PG_PORT" -U vh -d vh -XAtqc \
    "SELECT 1 FROM pg_database WHERE datname='vh_loadtest'" | grep -q 1) ||
    (cd /tmp && PGPASSWORD=vh psql -h 127.0.0.1 -p "$PG_PORT" -U vh -d vh -Xqc "CREATE DATABASE vh_loadtest" >/dev/null)
  # (uvicorn would read WEB_CONCURRENCY as its own worker count)
  start upstream env -u WEB_CONCURRENCY .venv/bin/python tests/bench/stamped_upstream.py --port "$UP_PORT" \
    --chunks "${LOADTEST_TOKENS:-32}" --delay-ms "${LOADTEST_TOKEN_MS:-25}"
  .venv/bin/python manage.py migrate --noinput -v0
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$UP_PORT/health" >/dev/null && break; sleep 0.2; done
  log "loadtest: preparing vh_loadtest (user, API key, policies, a small indexed collection)"
  SETUP="$(.venv/bin/python deploy/loadtest/setup_platform.py | tail -n 1)"
  LOADTEST_API_KEY="$(echo "$SETUP" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
  LOADTEST_SESSION="$(echo "$SETUP" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["session"])')"
  export LOADTEST_API_KEY LOADTEST_SESSION
  start platform .venv/bin/gunicorn config.asgi:application -c deploy/gunicorn.conf.py
  start worker .venv/bin/python manage.py knowledge_worker
  HOST="http://127.0.0.1:$PORT"
  for _ in $(seq 120); do curl -sf "$HOST/readyz" >/dev/null && break; sleep 0.5; done
  curl -sf "$HOST/readyz" >/dev/null || {
    curl -s "$HOST/readyz" || true
    tail -n 40 "$OUT/platform.log"
    die "the platform did not become ready (log $OUT/platform.log)"
  }
fi
[[ -n "${LOADTEST_API_KEY:-}" ]] || die "LOADTEST_API_KEY is needed (an API key with chat, knowledge:read, knowledge:write)"

# --- the runs ----------------------------------------------------------------------------------------
export LOADTEST_RATE="$RATE" LOADTEST_OUT="$OUT" LOADTEST_RUN_S="$RUN_S"
IFS=, read -r -a MULTS <<<"$MULTIPLIERS"
for m in "${MULTS[@]}"; do
  label="${m}x"
  users="$(LOADTEST_MULTIPLIER="$m" "$(host_python)" deploy/loadtest/mix.py)"
  log "loadtest: $label = $(awk "BEGIN{print $RATE*$m}") requests/s for ${RUN_S}s ($users users) against $HOST"
  # --stop-timeout: requests in flight at the end finish (and count) instead of being cut.
  LOADTEST_MULTIPLIER="$m" LOADTEST_LABEL="$label" "$VENV/bin/locust" -f deploy/loadtest/locustfile.py \
    --headless --host "$HOST" -u "$users" -r "$users" --run-time "${RUN_S}s" --stop-timeout 30 \
    --html "$OUT/locust-$label.html" --csv "$OUT/locust-$label" --only-summary --loglevel WARNING \
    >"$OUT/locust-$label.log" 2>&1 || true # its exit status is 1 on any failure; report.py judges
  [[ -f "$OUT/samples-$label.json" ]] || {
    tail -n 30 "$OUT/locust-$label.log"
    die "locust wrote no samples for $label"
  }
done

echo
status=0
"$(host_python)" deploy/loadtest/report.py "$OUT" || status=$?
echo
echo "report: $OUT/report.html (Locust's: $OUT/locust-*.html)"
if [[ -n "${LOADTEST_SMOKE:-}" && $status -eq 1 ]]; then status=0; fi # a plumbing check: thresholds not judged
exit "$status"
