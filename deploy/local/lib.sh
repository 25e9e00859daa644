# shellcheck shell=bash
# Shared paths, constants and helpers for deploy/local/{install,up,down,status}.
# Sourced, never executed. Every path is derived from this file's location so
# the scripts work from any cwd and from any clone (CI clones elsewhere).

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY_DIR/../.." && pwd)"
LOCAL_DIR="$REPO/.local"
SERVICES_DIR="$LOCAL_DIR/services"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"
ENV_FILE="$LOCAL_DIR/services.env"

ALL_SERVICES=(postgres redis redis-cluster elasticsearch es-cluster triton llm jaeger)

PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432
REDIS_PORT=6390
REDIS_CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)
ES_VERSION=8.19.7
ES_PORT=9200
ES_USER=elasticsearch
# es-cluster: three nodes of one cluster on loopback (HTTP and transport ports), small heaps.
ES_CLUSTER_HTTP_PORTS=(9201 9202 9203)
ES_CLUSTER_TRANSPORT_PORTS=(9301 9302 9303)
TRITON_HTTP_PORT=8010
TRITON_GRPC_PORT=8011
TRITON_METRICS_PORT=8012
LLM_PORT=8081
LLM_THREADS="${VH_LLM_THREADS:-2}"
# Jaeger's own launcher (deploy/local/jaeger) owns its ports (VH_JAEGER_*_PORT); these are its defaults.
JAEGER_OTLP_HTTP_PORT="${VH_JAEGER_OTLP_HTTP_PORT:-4318}"
JAEGER_UI_PORT="${VH_JAEGER_UI_PORT:-16686}"

TRITON_VENV="$SERVICES_DIR/triton-venv"
PROJECT_PY="$REPO/.venv/bin/python"

# Seconds `up` waits for each service before failing with the log tail.
READY_TIMEOUT="${VH_READY_TIMEOUT:-180}"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# The python that runs the stdlib-only helpers (probe.py) and builds the Triton
# venv: the same 3.11 the project uses (pyenv in CI), never Debian's.
host_python() {
    local p
    for p in python3.11 python3; do
        if command -v "$p" >/dev/null 2>&1; then
            command -v "$p"
            return
        fi
    done
    die "no python3.11 on PATH"
}

probe() { "$(host_python)" "$DEPLOY_DIR/probe.py" "$@"; }

pid_alive() {
    local f="$1" pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

log_tail() {
    local f="$1"
    if [[ -f "$f" ]]; then
        echo "----- last 40 lines of $f -----" >&2
        tail -n 40 "$f" >&2
        echo "-----" >&2
    else
        echo "(no log at $f)" >&2
    fi
}

# Elasticsearch's home: under the repo when its non-root user can reach it,
# else /var/lib/vh-elasticsearch (a repo under /root, mode 700, is not
# traversable by that user). VH_ES_HOME overrides.
es_home() {
    if [[ -n "${VH_ES_HOME:-}" ]]; then
        echo "$VH_ES_HOME"
    elif repo_traversable_by_es; then
        echo "$SERVICES_DIR/elasticsearch"
    else
        echo /var/lib/vh-elasticsearch
    fi
}

# Whether every directory from / down to the repo is searchable by "others"
# (the elasticsearch user is neither owner nor group of root's folders).
repo_traversable_by_es() {
    local d="$REPO"
    while [[ "$d" != "/" && -n "$d" ]]; do
        if [[ "$(stat -c %A "$d")" != *x ]]; then
            return 1
        fi
        d="$(dirname "$d")"
    done
    return 0
}

es_java_home() {
    if [[ -n "${VH_ES_JAVA_HOME:-}" ]]; then
        echo "$VH_ES_JAVA_HOME"
    elif [[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java ]]; then
        echo /usr/lib/jvm/temurin-25-jdk-amd64
    else
        echo /usr/lib/jvm/java-17-openjdk-amd64
    fi
}

# Expand the user's service list (empty = all) and reject unknown names.
resolve_services() {
    if [[ $# -eq 0 ]]; then
        printf '%s\n' "${ALL_SERVICES[@]}"
        return
    fi
    local s known
    for s in "$@"; do
        known=0
        for k in "${ALL_SERVICES[@]}"; do [[ "$s" == "$k" ]] && known=1; done
        [[ $known -eq 1 ]] || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
        echo "$s"
    done
}

service_address() {
    case "$1" in
    postgres) echo "postgres://vh:vh@127.0.0.1:$PG_PORT/vh" ;;
    redis) echo "redis://127.0.0.1:$REDIS_PORT/0" ;;
    redis-cluster) echo "redis://127.0.0.1:${REDIS_CLUSTER_PORTS[0]}/0 (ports ${REDIS_CLUSTER_PORTS[0]}-${REDIS_CLUSTER_PORTS[-1]})" ;;
    elasticsearch) echo "http://127.0.0.1:$ES_PORT" ;;
    es-cluster) echo "$(es_cluster_urls) (3 nodes)" ;;
    triton) echo "http://127.0.0.1:$TRITON_HTTP_PORT grpc 127.0.0.1:$TRITON_GRPC_PORT metrics http://127.0.0.1:$TRITON_METRICS_PORT/metrics" ;;
    llm) echo "http://127.0.0.1:$LLM_PORT/v1 (model smollm2)" ;;
    jaeger) echo "OTLP http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT query http://127.0.0.1:$JAEGER_UI_PORT/api/traces" ;;
    esac
}

# Quick readiness checks (also used by `status`). `up` adds a deeper LLM check.
ready_postgres() {
    [[ "$(cd /tmp && PGPASSWORD=vh PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$PG_PORT" -U vh -d vh -XAtqc 'select 1' 2>/dev/null)" == 1 ]]
}
ready_redis() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
ready_redis-cluster() {
    local p
    for p in "${REDIS_CLUSTER_PORTS[@]}"; do
        redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
}
ready_elasticsearch() { probe es "http://127.0.0.1:$ES_PORT" >/dev/null 2>&1; }
# Every node answers and sees the other two (a node that lost the cluster answers alone).
ready_es-cluster() {
    local p
    for p in "${ES_CLUSTER_HTTP_PORTS[@]}"; do
        [[ "$(curl -sf -m 3 "http://127.0.0.1:$p/_cluster/health?filter_path=number_of_nodes" 2>/dev/null)" == '{"number_of_nodes":3}' ]] || return 1
    done
}
es_cluster_urls() {
    local p urls=()
    for p in "${ES_CLUSTER_HTTP_PORTS[@]}"; do urls+=("http://127.0.0.1:$p"); done
    (
        IFS=,
        echo "${urls[*]}"
    )
}
ready_triton() { probe triton "http://127.0.0.1:$TRITON_HTTP_PORT" >/dev/null 2>&1; }
ready_llm() { probe llm "http://127.0.0.1:$LLM_PORT" >/dev/null 2>&1; }
ready_jaeger() { "$DEPLOY_DIR/jaeger" status >/dev/null 2>&1; }
# Built (deploy/local/jaeger install; the first build takes ~8.5 minutes).
jaeger_built() { [[ -x "$SERVICES_DIR/jaeger/bin/jaeger" && -f "$SERVICES_DIR/jaeger/bin/.vh-version" ]]; }
is_ready() { "ready_$1"; }

# Rewrite .local/services.env with the variables of the services that answer.
write_env_file() {
    local tmp="$ENV_FILE.tmp"
    mkdir -p "$LOCAL_DIR"
    {
        echo "# Written by deploy/local at $(date -Is); services that were up."
        ready_postgres && echo "DATABASE_URL=postgres://vh:vh@127.0.0.1:$PG_PORT/vh"
        ready_redis && echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
        ready_redis-cluster && echo "REDIS_CLUSTER_URL=redis://127.0.0.1:${REDIS_CLUSTER_PORTS[0]}/0"
        if ready_elasticsearch; then
            echo "ES_URL=http://127.0.0.1:$ES_PORT"
            # A single local node: one shard, no replica (green, not yellow).
            echo "ES_NUMBER_OF_SHARDS=1"
            echo "ES_NUMBER_OF_REPLICAS=0"
        fi
        # Read by the Elasticsearch-cluster tests (tests/knowledge/test_es_cluster.py) only.
        ready_es-cluster && echo "ES_CLUSTER_URLS=$(es_cluster_urls)"
        if ready_triton; then
            echo "TRITON_URL=http://127.0.0.1:$TRITON_HTTP_PORT"
            echo "TRITON_GRPC_URL=127.0.0.1:$TRITON_GRPC_PORT"
            echo "TRITON_METRICS_URL=http://127.0.0.1:$TRITON_METRICS_PORT/metrics"
            # The local Triton's "reranker" scores pairs with e5 cosine: a stand-in that exercises
            # the reranker protocol and batching in tests, not a cross-encoder (docs/answer-quality.md).
            echo "TRITON_RERANKER_MODEL=reranker"
        fi
        if ready_llm; then
            echo "VLLM_URL=http://127.0.0.1:$LLM_PORT/v1"
            echo "VLLM_MODEL=smollm2"
        fi
        if ready_jaeger; then
            # Not OTEL_EXPORTER_OTLP_ENDPOINT: that would turn tracing on for every test and run;
            # the tracing tests and a traced `make run` set it from these.
            echo "JAEGER_OTLP_URL=http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT"
            echo "JAEGER_QUERY_URL=http://127.0.0.1:$JAEGER_UI_PORT"
        fi
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}
