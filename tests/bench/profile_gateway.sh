#!/usr/bin/env bash
# Profile one gateway worker under load with py-spy (raw folded stacks) and print where the
# event-loop thread spends its samples (tests/bench/profile_summary.py).
#
#   bash tests/bench/profile_gateway.sh                 # uncached JSON, 16 clients
#   MODE=--stream CACHE=1 bash tests/bench/profile_gateway.sh
#   TREE=/tmp/vh_base bash tests/bench/profile_gateway.sh   # another checkout (the same harness)
#
# The set-up is run_gateway_bench.sh's (SETUP_ONLY=1: database, key, policy, alias); CPU 1
# runs the worker and its Redis, CPU 0 the fake upstream and the load. Stacks: $OUT/prof.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/../.." && pwd)
TREE=${TREE:-$HERE}
SHARED=${SHARED:-$HERE/../shared/bench}
HPY=${HPY:-$HERE/.bench/litellm/harness-venv/bin/python}
PYSPY=${PYSPY:-$(dirname "$HPY")/py-spy}
OUT=${OUT:-$HERE/.bench/gateway/profile-$(date +%Y%m%d-%H%M%S)}
PORT=${PORT:-8350} UP_PORT=${UP_PORT:-9100} RPORT=${BENCH_REDIS_PORT:-6391}
mkdir -p "$OUT"
cd "$TREE"
[[ -f .local/services.env ]] && { set -a; . .local/services.env; set +a; }
export DEBUG=0 SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
export DATABASE_URL=${DATABASE_URL_BENCH:-postgres://vh:vh@127.0.0.1:5432/vh_bench} REDIS_URL=redis://127.0.0.1:$RPORT/0
export VLLM_URL=http://127.0.0.1:$UP_PORT/v1 VLLM_MODEL=fake-model RESPONSE_CACHE_ENABLED=${CACHE:-0}
export ALLOWED_HOSTS=127.0.0.1,localhost WEB_CONCURRENCY=1 GUNICORN_BIND=127.0.0.1:$PORT ALLOWED_HOSTS_ADD_OWN_IP=0 LOG_LEVEL=INFO
unset TRITON_URL TRITON_GRPC_URL ES_URL PROMETHEUS_MULTIPROC_DIR
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
taskset -c 1 redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning >/dev/null 2>&1 & pids+=($!)
taskset -c 0 "$HPY" "$SHARED/fake_upstream.py" --port "$UP_PORT" --chunks 20 >"$OUT/upstream.log" 2>&1 & pids+=($!)
sleep 1
KEY=$(SHARED=$SHARED SETUP_ONLY=1 BENCH_REDIS_PORT=$RPORT UP_PORT=$UP_PORT bash tests/bench/run_gateway_bench.sh 2>/dev/null | grep GW_KEY= | cut -d= -f2)
[[ -n $KEY ]] || { echo "set-up printed no key"; exit 1; }
taskset -c 1 .venv/bin/gunicorn config.asgi:application -c deploy/gunicorn.conf.py >"$OUT/gateway.log" 2>&1 & G=$!; pids+=($G)
body='{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d "$body" | grep -q tok0 && break
  sleep 0.5
done
W=$(pgrep -P "$G" | head -1)
taskset -c 0 "$HPY" "$SHARED/load.py" --base-url "http://127.0.0.1:$PORT/v1" --model bench-model --api-key "$KEY" \
  -c "${CONC:-16}" -d 14 ${MODE:-} >"$OUT/load.log" 2>&1 & pids+=($!)
sleep 2
"$PYSPY" record -p "$W" -r 200 -d 10 -f raw --full-filenames -o "$OUT/prof.txt" >/dev/null 2>&1
python3 "$HERE/tests/bench/profile_summary.py" "$OUT/prof.txt"
echo "stacks: $OUT/prof.txt"
