#!/usr/bin/env bash
# `make evaluate`: the project's retrieval and answer evaluation (docs/answer-quality.md).
#
# Runs on a scratch SQLite database under .local/eval (the corpora are ingested there, never
# into your own data), with in-process embeddings unless Triton answers, the local backend,
# and Elasticsearch too when deploy/local's one is up (.local/services.env).
#   make evaluate                     # print the tables
#   make evaluate RECORD=1            # also store them as the floor the test command holds (evaluation/recorded.json)
#   make evaluate ANSWERS=extractive,generative   # generative needs a model endpoint (VLLM_URL)
#   make evaluate STAGES=lexical,dense,hybrid,hybrid+rerank   # rerank: only with a reranker configured
# The local Triton's "reranker" is an e5-cosine stand-in, ~10 s a search on 2 cores: not evaluated by default.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
deploy/local/bootstrap.sh --dev >/dev/null

if [[ -f .local/services.env ]]; then
  set -a
  # shellcheck disable=SC1091
  . .local/services.env
  set +a
fi
export DEBUG=1
export DATA_DIR="$REPO/.local/eval"
export DATABASE_URL="sqlite:///$DATA_DIR/db.sqlite3"
export KNOWLEDGE_JOBS_INLINE=1
export SEARCH_INDEX_ALIAS=vh-eval-live
# Redis is not needed (rate limits and the response cache are off in the evaluation).
unset REDIS_URL REDIS_CLUSTER_URL
rm -rf "$DATA_DIR"
mkdir -p "$DATA_DIR"
backends=local
[[ -n "${ES_URL:-}" ]] && backends=local,elasticsearch
args=(--backends "${BACKENDS:-$backends}" --answers "${ANSWERS:-extractive}" --stages "${STAGES:-lexical,dense,hybrid}"
  --json "$DATA_DIR/evaluation.json")
[[ -n "${RECORD:-}" ]] && args+=(--record)
.venv/bin/python manage.py migrate --noinput -v0
PYTHONUNBUFFERED=1 .venv/bin/python manage.py evaluate "${args[@]}"
echo "evaluate: results in $DATA_DIR/evaluation.json"
