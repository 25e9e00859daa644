"""Every platform metric, declared once (django-prometheus adds the django_* ones).

Names are unit-suffixed; labels are small fixed sets (never a user, document or
conversation id). Under several worker processes set PROMETHEUS_MULTIPROC_DIR:
prometheus_client then writes per-process files that /metrics aggregates;
gauges declare how they aggregate (``multiprocess_mode``).
"""

from __future__ import annotations

import bisect
import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


@functools.cache
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered.

    For the request path's label sets, which are few and fixed (routes, endpoints, outcomes):
    ``labels()`` converts every value and takes the metric's lock on each call, about 1.5 us,
    some fifteen times per proxied request (#17). Never for a value a client chooses.
    """
    return metric.labels(*labels)


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2)

# --- HTTP / websocket edge ----------------------------------------------------
REQUEST_DURATION = Histogram(
    "request_duration_seconds",
    "Time to answer an API or chat request, to the last byte of the answer.",
    ["endpoint", "method"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "http_requests_total",
    "API and chat requests by status class (2xx, 4xx, 5xx).",
    ["endpoint", "status"],
)
WEBSOCKET_CONNECTIONS = Gauge(
    "chat_websocket_connections",
    "Open chat websocket connections.",
    multiprocess_mode="livesum",
)

# --- chat pipeline -------------------------------------------------------------
CHAT_ERRORS = Counter("chat_errors_total", "Chat requests that ended in an error, by error code.", ["code"])
CHAT_RESPONSES = Counter(
    "chat_responses_total", "Finished chat answers by outcome (complete, partial, error, cached).", ["status"]
)

# --- inference -------------------------------------------------------------------
INFERENCE_REQUESTS = Counter(
    "inference_requests_total",
    "Upstream model calls by endpoint, kind and outcome.",
    ["endpoint", "kind", "outcome"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "inference_time_to_first_token_seconds",
    "Upstream time to first token.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "inference_time_per_output_token_seconds",
    "Gap between consecutive streamed tokens (inter-token latency).",
    ["endpoint"],
    buckets=_TOKEN_BUCKETS,
)


class LocalHistogram:
    """Observations gathered in process memory, added to a Histogram child in one go.

    The token loop observes every inter-token gap. Under gunicorn (multiprocess mode) each
    ``observe`` is two locked writes to an mmap file: about 5 % of the token loop's CPU in
    the websocket benchmark. This keeps the metric's meaning (one observation per gap) for
    a handful of writes per answer. ``flush`` once at the end (also after a failure).
    """

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # Histogram.observe counts a value in the first bucket whose upper bound is >= it.
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """``count`` observations of ``value``."""
        self._counts[bisect.bisect_left(self._bounds, value)] += count
        self._sum += value * count

    def flush(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        if not any(counts):
            return
        for bucket, n in zip(self._child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        self._child._sum.inc(self._sum)
        self._sum = 0.0


TOKENS_GENERATED = Counter("inference_generated_tokens_total", "Completion tokens generated.", ["endpoint"])
PROMPT_TOKENS = Counter("inference_prompt_tokens_total", "Prompt tokens sent.", ["endpoint"])
TOKENS_PER_SECOND = Histogram(
    "inference_tokens_per_second",
    "Decode throughput of one answer (completion tokens / generation time).",
    ["endpoint"],
    buckets=(1, 5, 10, 20, 40, 80, 160, 320, 640),
)
QUEUE_DEPTH = Gauge(
    "inference_queue_depth",
    "Requests waiting for an endpoint slot.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "inference_queue_wait_seconds",
    "Time spent waiting for an endpoint slot.",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
ENDPOINT_UP = Gauge(
    "inference_endpoint_up",
    "1 when the endpoint's last health check passed.",
    ["endpoint", "kind"],
    multiprocess_mode="max",
)
BREAKER_STATE = Gauge(
    "inference_breaker_state",
    "Circuit breaker: 0 closed, 1 half-open, 2 open.",
    ["endpoint"],
    multiprocess_mode="max",
)
INFERENCE_DURATION = Histogram(
    "inference_request_duration_seconds",
    "Upstream call latency of successful single-shot calls and whole streams, by endpoint and kind.",
    ["endpoint", "kind"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_RETRIES = Counter(
    "inference_retries_total",
    "Attempts after the first one (retries and failovers), by endpoint tried.",
    ["endpoint", "kind"],
)
INFERENCE_IN_FLIGHT = Gauge(
    "inference_in_flight_requests",
    "Requests currently running against an endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
EMBEDDING_BATCH_WAIT = Histogram(
    "embedding_batch_wait_seconds",
    "Time a text waited in the client-side micro-batching queue before its batch was sent.",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
EMBEDDING_BATCH_SIZE = Histogram(
    "embedding_batch_size", "Texts per embedding call sent upstream.", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)

# --- retrieval -----------------------------------------------------------------
RETRIEVAL_DURATION = Histogram(
    "retrieval_duration_seconds",
    "Retrieval stage latency (search: the engine query; rerank: the reranker call; total).",
    ["stage", "backend"],
    buckets=_LATENCY_BUCKETS,
)
DOCUMENTS_INDEXED = Counter("knowledge_chunks_indexed_total", "Chunks written to the search index.", ["backend"])
SEARCH_PARTIAL = Counter(
    "knowledge_search_partial_total",
    "Elasticsearch searches some shards did not answer (search: search, texts, names), "
    "by what one more try gave (after_retry: whole, partial, failed; not_retried: shards timed out).",
    ["search", "after_retry"],
)

# --- gateway controls ---------------------------------------------------------
CACHE_REQUESTS = Counter("response_cache_requests_total", "Response cache lookups by result.", ["result"])
CACHE_LATENCY = Histogram(
    "response_cache_duration_seconds",
    "Response cache lookup latency.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
RATELIMIT_REJECTIONS = Counter("ratelimit_rejections_total", "Requests refused by a rate limit, by scope.", ["scope"])
RATELIMIT_LATENCY = Histogram(
    "ratelimit_check_duration_seconds",
    "Rate limiter check latency.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
# Callers (admit, settle, ...) per request-path Redis pipeline: above 1 the group commit
# shares round trips (chat/gateway/redis_async.py).
REDIS_PIPELINE_CALLS = Histogram(
    "gateway_redis_pipeline_calls",
    "Request-path calls sent in one Redis pipeline (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# --- API worker process (deploy/gunicorn.conf.py samples these) ----------------
# prometheus_client's process_* collector is absent under PROMETHEUS_MULTIPROC_DIR
# (the multiprocess registry only aggregates files), so each gunicorn worker
# samples its own CPU time and resident memory into these.
WORKER_CPU_SECONDS = Counter("api_worker_cpu_seconds_total", "CPU time (user + system) used by API workers.")
WORKER_RESIDENT_MEMORY = Gauge(
    "api_worker_resident_memory_bytes", "Resident memory of live API workers.", multiprocess_mode="livesum"
)
RATELIMIT_FALLBACKS = Counter(
    "ratelimit_redis_failures_total",
    "Times the limiter found Redis unreachable and switched to its fail mode (open: local limiter; closed: 503).",
    ["mode"],
)
API_KEY_AUTHENTICATIONS = Counter(
    "api_key_authentications_total",
    "Bearer API-key authentications by outcome (ok, malformed, unknown, expired, revoked, inactive_user).",
    ["outcome"],
)

# --- per-process configuration caches (config.local_cache) -------------------------
LOCAL_CACHE_STALE_SERVED = Counter(
    "config_stale_served_total",
    "Hot-path configuration served from its last-known-good copy because reloading it failed "
    "(the database was unreachable), by cache.",
    ["cache"],
)
CURATED_REPLIES = Counter(
    "chat_curated_replies_total", "Questions answered with an operator's curated reply (no model call)."
)
NON_MODEL_ANSWERS = Counter(
    "chat_non_model_answers_total",
    "Answers made without the model, by kind (curated, extractive, not-found).",
    ["kind"],
)

# --- dependency faults (monitoring.outages, issue #20) -------------------------------
DEPENDENCY_FAILURES = Counter(
    "dependency_failures_total",
    "Calls to a dependency that failed because it was unreachable (redis, database), by dependency.",
    ["dependency"],
)
CHAT_STREAM_ERRORS = Counter(
    "chat_stream_errors_total",
    "Answers that failed after their stream had started (HTTP 200 already sent, or a websocket "
    "frame), by channel (openai, rest, websocket) and the status class the error stands for (4xx, 5xx). "
    "http_requests_total counts these requests as 2xx; the error-rate alert adds them.",
    ["channel", "status"],
)
CHAT_WEBSOCKET_ANSWERS = Counter(
    "chat_websocket_answers_total",
    "Answers asked for over the chat websocket (requests that http_requests_total does not see).",
)
ANSWER_WRITES_DEFERRED = Counter(
    "chat_answer_writes_deferred_total",
    "Final answer writes that failed (database unreachable) and were queued in memory to be retried.",
)
ANSWER_WRITES_PENDING = Gauge(
    "chat_answer_writes_pending",
    "Final answer writes queued in memory, waiting for the database.",
    multiprocess_mode="livesum",
)
# --- model groups (the names clients ask for; label values are group names, never client input) ----
MODEL_REQUESTS = Counter(
    "model_requests_total",
    "Chat and embedding requests by the model group that served them and outcome (ok, error, cached).",
    ["model", "outcome"],
)
MODEL_TOKENS = Counter("model_tokens_total", "Tokens by model group and kind (prompt, completion).", ["model", "kind"])
MODEL_TTFT = Histogram(
    "model_time_to_first_token_seconds",
    "Time from the request to the first token of the answer, by model group (cache hits excluded).",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
MODEL_FALLBACKS = Counter(
    "model_fallbacks_total",
    "Requests a fallback group served, by the group asked for, the one that served and why "
    "(unavailable, limits, context, error).",
    ["model", "fallback", "reason"],
)
MODEL_NOT_FOUND = Counter(
    "model_not_found_total",
    "Requests refused because the model they name is unknown or not allowed to the caller (no label: "
    "the name is client input).",
)
BUDGET_REJECTIONS = Counter(
    "gateway_budget_rejections_total", "Requests refused because a monthly token budget is spent.", ["scope"]
)
