#!/usr/bin/env bash
# Reproducible gateway-overhead bench of OUR OpenAI-compatible endpoint (/v1/chat/completions)
# with the shared harness (../shared/bench, see its README): direct fake upstream vs the
# Django gateway, alternating, CPU-pinned (CPU 0: load + upstream, CPU 1: gateway + its Redis).
#
#   bash tests/bench/run_gateway_bench.sh                  # uncached (RESPONSE_CACHE_ENABLED=0)
#   CACHE=1 bash tests/bench/run_gateway_bench.sh          # response cache on (identical prompts: hits)
#   ROUNDS=2 DURATION=8 CONCS=1,16,64 bash tests/bench/run_gateway_bench.sh   # short run
#   SETUP_ONLY=1 bash tests/bench/run_gateway_bench.sh     # prepare DB/key/redis, print the env, stop
#   BASELINE_DIR=/tmp/vh_base bash tests/bench/run_gateway_bench.sh   # + another checkout, A/B/C
#   CACHE=both BASELINE_DIR=/tmp/vh_base bash tests/bench/run_gateway_bench.sh   # both trees, cache off
#                                                          # and on (hits), alternating in one run
#   TRACING_AB=1 bash tests/bench/run_gateway_bench.sh     # this tree with tracing off / on at 10 %
#                                                          # (/ on at 10 % keeping errors and slow traces),
#                                                          # alternating; spans go to the local Jaeger
#
# Production settings: DEBUG=0, random SECRET_KEY, gunicorn + deploy/gunicorn.conf.py, one
# uvicorn worker, auth on (an API key), rate limiter on (a bench policy without limits, so the
# admit/settle Redis round trips still happen), the access log at INFO, store=false (default),
# retrieval off in ChatSettings (plain OpenAI requests carry no `retrieval` field).
# Own PostgreSQL database (vh_bench, migrated here) and own Redis on port 6391 pinned to CPU 1.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
SHARED=${SHARED:-$REPO/../shared/bench}
[[ -f $SHARED/run_gateway.sh ]] || { echo "shared bench not found at $SHARED"; exit 2; }
[[ -f .local/services.env ]] && { set -a; . .local/services.env; set +a; }

PG_BASE=${PG_BASE:-postgres://vh:vh@127.0.0.1:5432}
BENCH_DB=${BENCH_DB:-vh_bench}
BENCH_REDIS_PORT=${BENCH_REDIS_PORT:-6391}
GW_PORT=${GW_PORT:-8300}
GW_CPUS=${GW_CPUS:-1}
CACHE=${CACHE:-0}

export DEBUG=0
export SECRET_KEY=${SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')}
export DATABASE_URL=$PG_BASE/$BENCH_DB
export REDIS_URL=redis://127.0.0.1:$BENCH_REDIS_PORT/0
export VLLM_URL=http://127.0.0.1:${UP_PORT:-9100}/v1 VLLM_MODEL=fake-model
export RESPONSE_CACHE_ENABLED=$([[ $CACHE == 0 ]] && echo 0 || echo 1)  # CACHE=both: set per target below
export ALLOWED_HOSTS=127.0.0.1,localhost
export WEB_CONCURRENCY=1 GUNICORN_BIND=127.0.0.1:$GW_PORT ALLOWED_HOSTS_ADD_OWN_IP=0
export LOG_LEVEL=${LOG_LEVEL:-INFO}
# The bench needs neither search nor embeddings: no Triton/ES endpoints on the request path.
unset TRITON_URL TRITON_GRPC_URL ES_URL PROMETHEUS_MULTIPROC_DIR

REDIS_PID=
cleanup() { if [[ -n $REDIS_PID ]]; then kill "$REDIS_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT INT TERM

# Own Redis, pinned with the gateway (the shared one on 6390 belongs to the other services).
taskset -c "$GW_CPUS" redis-server --port "$BENCH_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --loglevel warning > /tmp/vh-bench-redis.log 2>&1 &
REDIS_PID=$!
for _ in $(seq 20); do redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done

# Own database, migrated.
PGPASSWORD=vh psql -h 127.0.0.1 -U vh -d vh -tAc "SELECT 1 FROM pg_database WHERE datname='$BENCH_DB'" | grep -q 1 \
  || PGPASSWORD=vh psql -h 127.0.0.1 -U vh -d vh -c "CREATE DATABASE $BENCH_DB" >/dev/null
.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py sync_endpoints >/dev/null

# Bench data: no retrieval, deterministic temperature (so CACHE=1 can hit), a per-key policy
# with every limit on but out of reach (requests, tokens and concurrency are all checked and
# settled in Redis, as with the shipped defaults) and the global cap raised the same way,
# an endpoint slot count above the bench's concurrency.
.venv/bin/python manage.py shell -c "
from chat.models import ChatSettings
from chat.gateway.models import RateLimitPolicy
from inference.models import ModelEndpoint
from django.contrib.auth import get_user_model
ChatSettings.objects.update_or_create(pk=1, defaults={'retrieval_enabled': False, 'temperature': 0.0})
RateLimitPolicy.objects.filter(scope='global').update(requests=10_000_000)
RateLimitPolicy.objects.update_or_create(name='bench', defaults={'scope': 'api_key', 'is_default': False,
    'requests': 10_000_000, 'window_seconds': 60, 'tokens_per_minute': 1_000_000_000,
    'concurrent_requests': 100_000, 'enabled': True})
ModelEndpoint.objects.filter(name='vllm').update(max_concurrent=1024, max_queue=4096)
get_user_model().objects.get_or_create(username='bench')
# The model name clients use reaches the upstream's group (VLLM_MODEL=fake-model) as an alias.
from inference.models import ModelGroup
ModelGroup.objects.filter(name='fake-model').update(aliases='bench-model')
"
GW_KEY=$(.venv/bin/python manage.py create_api_key --user bench --scopes chat --name bench --policy bench 2>/dev/null)
export GW_KEY
# Monthly token budgets out of reach, for the key and for the model: checked in admit's round trip,
# charged in settle's, like production with budgets on (the model gateway's cost is in the figures).
.venv/bin/python manage.py shell -c "
from chat.gateway.models import APIKey, TokenBudget
from inference.models import ModelGroup
key = APIKey.objects.get(prefix='${GW_KEY:0:12}')
TokenBudget.objects.update_or_create(scope='api_key', api_key=key, model_group=None, defaults={'tokens_per_month': 10**15})
TokenBudget.objects.update_or_create(scope='api_key', api_key=None, user=None, model_group=ModelGroup.objects.get(name='fake-model'),
    defaults={'tokens_per_month': 10**15})
"

if [[ ${SETUP_ONLY:-0} == 1 ]]; then
  echo "GW_KEY=$GW_KEY"; echo "REDIS_PID=$REDIS_PID (port $BENCH_REDIS_PORT)"
  trap - EXIT; exit 0
fi

if [[ -n ${TRACING_AB:-} ]]; then
  # This tree three times (plus direct), alternating in one run: tracing off; on at 10 %
  # head sampling only (TRACING_KEEP_ERRORS=0, TRACING_KEEP_SLOW_S=0: the 90 % not sampled
  # are not recorded); on at 10 % with the keep rules (every request recorded, 10 % + failed
  # + slow exported). Spans are exported over OTLP/HTTP to the local Jaeger (deploy/local/up jaeger).
  HPY=${HPY:-$REPO/.bench/litellm/harness-venv/bin/python}
  [[ -x $HPY ]] || { python3 -m venv "$(dirname "$(dirname "$HPY")")"; "$(dirname "$HPY")/pip" install -q 'uvicorn[standard]' aiohttp orjson; }
  deploy/local/up jaeger
  OUT=${OUT:-$REPO/.bench/gateway/results/$(date +%Y%m%d-%H%M%S)-tracing}
  mkdir -p "$OUT"
  PIDS=()
  stop_all() {
    set +e
    for p in "${PIDS[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
    cleanup
  }
  trap stop_all EXIT INT TERM
  taskset -c "${UP_CPUS:-0}" "$HPY" "$SHARED/fake_upstream.py" --port "${UP_PORT:-9100}" --chunks "${CHUNKS:-20}" \
    --delay-ms "${DELAY_MS:-0}" > "$OUT/upstream.log" 2>&1 &
  UP_PID=$!; PIDS+=("$UP_PID")
  OTEL="OTEL_EXPORTER_OTLP_ENDPOINT=${JAEGER_OTLP_URL:-http://127.0.0.1:4318} OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=${TRACE_RATIO:-0.1}"
  declare -A VARIANT=(
    [off]=""
    [trace10]="$OTEL OTEL_SERVICE_NAME=vh-bench-trace10 TRACING_KEEP_ERRORS=0 TRACING_KEEP_SLOW_S=0"
    [trace10keep]="$OTEL OTEL_SERVICE_NAME=vh-bench-trace10keep TRACING_KEEP_ERRORS=1 TRACING_KEEP_SLOW_S=10"
  )
  # VARIANTS: which, in which order; "baseline" (BASELINE_DIR: the code before tracing existed,
  # e.g. `git archive HEAD`) makes "off costs nothing" a measurement: off vs baseline.
  read -r -a NAMES <<<"${VARIANTS:-${BASELINE_DIR:+baseline }off trace10 trace10keep}"
  TARGETS=(--target "name=direct,url=http://127.0.0.1:${UP_PORT:-9100}/v1,model=fake-model")
  WATCH=(--watch "upstream=$UP_PID" --watch "redis=$REDIS_PID")
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}; port=$((GW_PORT + i))
    if [[ $name == baseline ]]; then
      (cd "$BASELINE_DIR" && GUNICORN_BIND=127.0.0.1:$port exec taskset -c "$GW_CPUS" \
        "$REPO/.venv/bin/gunicorn" config.asgi:application -c deploy/gunicorn.conf.py) > "$OUT/$name.log" 2>&1 &
    else
      # shellcheck disable=SC2086
      env ${VARIANT[$name]} GUNICORN_BIND=127.0.0.1:$port taskset -c "$GW_CPUS" \
        "$REPO/.venv/bin/gunicorn" config.asgi:application -c deploy/gunicorn.conf.py > "$OUT/$name.log" 2>&1 &
    fi
    pid=$!; PIDS+=("$pid")
    TARGETS+=(--target "name=$name,url=http://127.0.0.1:$port/v1,model=bench-model,key=$GW_KEY")
    WATCH+=(--watch "$name=$pid")
  done
  for i in "${!NAMES[@]}"; do
    for _ in $(seq 60); do
      curl -sf "http://127.0.0.1:$((GW_PORT + i))/v1/chat/completions" -H "authorization: Bearer $GW_KEY" -H 'content-type: application/json' \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' | grep -q 'tok0 tok1' && break; sleep 1
    done
  done
  sleep 3
  "$HPY" "$SHARED/ab.py" --out "$OUT/ab" "${TARGETS[@]}" \
    --concurrency "${CONCS:-1,16}" --modes "${MODES:-json,stream}" --rounds "${ROUNDS:-3}" \
    --duration "${DURATION:-15}" --warmup "${WARMUP:-3}" --load-cpus "${LOAD_CPUS:-0}" \
    "${WATCH[@]}" --upstream-stats "http://127.0.0.1:${UP_PORT:-9100}/stats" --python "$HPY" ${AB_EXTRA:-}
  grep -h "tracing on" "$OUT"/trace10*.log || true
  echo "results in $OUT"
  exit 0
fi

if [[ -n ${BASELINE_DIR:-} ]]; then
  # Targets alternating in one run (README section 3, by hand): direct, another checkout of
  # this project (e.g. `git archive <rev> | tar -x -C DIR` or a detached worktree) as
  # "baseline", and this tree as "django". CACHE=both: the two trees twice, with the response
  # cache off and on ("-cache": every request after the first is a hit), so hits and uncached
  # requests are compared in the same run. Same pinning as run_gateway.sh; everything started
  # here is killed at the end.
  HPY=${HPY:-$REPO/.bench/litellm/harness-venv/bin/python}
  [[ -x $HPY ]] || { python3 -m venv "$(dirname "$(dirname "$HPY")")"; "$(dirname "$HPY")/pip" install -q 'uvicorn[standard]' aiohttp orjson; }
  OUT=${OUT:-$REPO/.bench/gateway/results/$(date +%Y%m%d-%H%M%S)-ab3$([[ $CACHE != 0 ]] && echo -cache)}
  mkdir -p "$OUT"
  PIDS=()
  stop_all() {
    set +e
    for p in "${PIDS[@]}"; do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
    cleanup
  }
  trap stop_all EXIT INT TERM
  taskset -c "${UP_CPUS:-0}" "$HPY" "$SHARED/fake_upstream.py" --port "${UP_PORT:-9100}" --chunks "${CHUNKS:-20}" \
    --delay-ms "${DELAY_MS:-0}" > "$OUT/upstream.log" 2>&1 &
  UP_PID=$!; PIDS+=("$UP_PID")
  case $CACHE in
    both) NAMES=(baseline django baseline-cache django-cache) ;;
    1) NAMES=(baseline-cache django-cache) ;;
    *) NAMES=(baseline django) ;;
  esac
  TARGETS=(--target "name=direct,url=http://127.0.0.1:${UP_PORT:-9100}/v1,model=fake-model")
  WATCH=(--watch "upstream=$UP_PID" --watch "redis=$REDIS_PID")
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}; port=$((GW_PORT + i)); dir=$REPO
    [[ $name == baseline* ]] && dir=$BASELINE_DIR
    # Each cached target keeps its own entries (its own key prefix): a tree never serves what
    # the other stored, so each pays for its own replay.
    cache_env=(RESPONSE_CACHE_ENABLED=0)
    [[ $name == *-cache ]] && cache_env=(RESPONSE_CACHE_ENABLED=1 "REDIS_KEY_PREFIX=vhbench-$name")
    (cd "$dir" && exec env "${cache_env[@]}" GUNICORN_BIND=127.0.0.1:$port taskset -c "$GW_CPUS" \
      "$REPO/.venv/bin/gunicorn" config.asgi:application -c deploy/gunicorn.conf.py) > "$OUT/$name.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    TARGETS+=(--target "name=$name,url=http://127.0.0.1:$port/v1,model=bench-model,key=$GW_KEY")
    WATCH+=(--watch "$name=$pid")
  done
  for i in "${!NAMES[@]}"; do
    url=http://127.0.0.1:$((GW_PORT + i))/v1/chat/completions
    for _ in $(seq 60); do
      curl -sf "$url" -H "authorization: Bearer $GW_KEY" -H 'content-type: application/json' \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' | grep -q 'tok0 tok1' && break; sleep 1
    done
    if [[ ${NAMES[$i]} == *-cache ]]; then
      # load.py's own request, streamed, answered by the model first: the entry holds the stream's
      # chunks (a JSON request first would store a whole answer, which a stream replays in pieces).
      curl -sfN "$url" -H "authorization: Bearer $GW_KEY" -H 'content-type: application/json' \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"Say hello in twenty tokens."}],"max_tokens":20,"stream":true,"stream_options":{"include_usage":true}}' >/dev/null
    fi
  done
  sleep 3
  "$HPY" "$SHARED/ab.py" --out "$OUT/ab" "${TARGETS[@]}" \
    --concurrency "${CONCS:-1,16,64}" --modes "${MODES:-json,stream}" --rounds "${ROUNDS:-3}" \
    --duration "${DURATION:-15}" --warmup "${WARMUP:-3}" --load-cpus "${LOAD_CPUS:-0}" \
    "${WATCH[@]}" --upstream-stats "http://127.0.0.1:${UP_PORT:-9100}/stats" --python "$HPY" ${AB_EXTRA:-}
  echo "results in $OUT"
  exit 0
fi

GW_NAME=${GW_NAME:-django$([[ $CACHE == 1 ]] && echo -cache)} \
GW_CMD="$REPO/.venv/bin/gunicorn config.asgi:application -c $REPO/deploy/gunicorn.conf.py" \
GW_URL=http://127.0.0.1:$GW_PORT/v1 GW_MODEL=${GW_MODEL:-bench-model} GW_CPUS=$GW_CPUS \
AB_EXTRA="--watch redis=$REDIS_PID ${AB_EXTRA:-}" \
bash "$SHARED/run_gateway.sh"
