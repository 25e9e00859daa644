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

from config.env import env_bool, env_float, env_int, env_list, env_opt, env_str

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
    "monitoring",
    "inference",
    "knowledge",
    "chat",
    "chat.gateway",
]

MIDDLEWARE = [
    # Prometheus before/after wrap everything so every response is counted.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "monitoring.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
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
    _db["OPTIONS"] = {
        "connect_timeout": env_int("DB_CONNECT_TIMEOUT", 3),
        "pool": {"min_size": 1, "max_size": env_int("DB_POOL_MAX_SIZE", 10), "timeout": 10},
    }
    _db["CONN_MAX_AGE"] = 0
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        # WAL + IMMEDIATE lets the web server and the ingestion worker share the file.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
_db["ENGINE"] = _db["ENGINE"].replace("django.db.backends.", "django_prometheus.db.backends.")
DATABASES = {"default": _db}

# --- Redis: cache, sessions, channel layer ----------------------------------

REDIS_URL = env_opt("REDIS_URL")
# Every Redis key the platform writes starts with this (several deployments can share a server).
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "vh")
REDIS_TIMEOUT = env_float("REDIS_TIMEOUT", 1.0)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_TIMEOUT,
                # A Redis outage degrades caching; it never fails a request.
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_KEY_PREFIX}:asgi"},
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
else:
    CACHES = {
        "default": {
            "BACKEND": "django_prometheus.cache.backends.locmem.LocMemCache",
            "LOCATION": "vh-local",
            "KEY_PREFIX": REDIS_KEY_PREFIX,
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.db"
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Search (Elasticsearch, or the embedded local backend) ------------------

ES_URL = env_opt("ES_URL")

# --- Inference (vLLM / OpenAI-compatible generation, Triton embeddings) ------

VLLM_URL = env_opt("VLLM_URL")
VLLM_MODEL = env_opt("VLLM_MODEL")
VLLM_API_KEY = env_opt("VLLM_API_KEY")
# Where the run command starts the local llama.cpp server when VLLM_URL is unset.
LOCAL_LLM_URL = env_str("LOCAL_LLM_URL", "http://127.0.0.1:8081/v1")
TRITON_URL = env_opt("TRITON_URL")

# --- Knowledge (ingestion, chunking, retrieval) -----------------------------

# --- Chat ----------------------------------------------------------------------

# --- Gateway controls (API keys, rate limits, response cache, validation) ------
# See docs/gateway.md for what each knob does and why the defaults are what they are.

# Request validation (chat/gateway/validation.py): checked before anything costly.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 256 * 1024)
GATEWAY_MAX_MESSAGE_CHARS = env_int("GATEWAY_MAX_MESSAGE_CHARS", 4000)
GATEWAY_MAX_PROMPT_CHARS = env_int("GATEWAY_MAX_PROMPT_CHARS", 32000)
GATEWAY_MAX_MESSAGES = env_int("GATEWAY_MAX_MESSAGES", 50)
GATEWAY_MAX_TOKENS = env_int("GATEWAY_MAX_TOKENS", 2048)

# Rate limiting. open: when Redis is unreachable each process applies the same policies
# in memory (availability first); closed: refuse with 503 until Redis is back.
RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
RATELIMIT_FAIL_MODE = env_str("RATELIMIT_FAIL_MODE", "open").strip().lower()
if RATELIMIT_FAIL_MODE not in ("open", "closed"):
    raise ImproperlyConfigured(f"RATELIMIT_FAIL_MODE={RATELIMIT_FAIL_MODE!r}: use open or closed.")
# How long a process caches the policy table and API-key lookups (revocation is still
# immediate: a Redis-held version is checked on every request).
GATEWAY_POLICY_CACHE_S = env_float("GATEWAY_POLICY_CACHE_S", 10.0)
# After Redis failed, how long to use the fallback before trying Redis again.
RATELIMIT_REDIS_RETRY_S = env_float("RATELIMIT_REDIS_RETRY_S", 2.0)
# A concurrency slot not released (crashed worker) expires after this many seconds.
RATELIMIT_SLOT_TTL_S = env_int("RATELIMIT_SLOT_TTL_S", 300)
# Anonymous browser chat (no login): off unless enabled; limited per IP and per session.
ANONYMOUS_CHAT_ENABLED = env_bool("ANONYMOUS_CHAT_ENABLED", False)

# Response cache (exact match on model + prompt + context + parameters).
RESPONSE_CACHE_ENABLED = env_bool("RESPONSE_CACHE_ENABLED", True)
RESPONSE_CACHE_TTL = env_int("RESPONSE_CACHE_TTL", 3600)
if not 3600 <= RESPONSE_CACHE_TTL <= 86400 and not env_bool("RESPONSE_CACHE_TTL_UNBOUNDED", False):
    raise ImproperlyConfigured(f"RESPONSE_CACHE_TTL={RESPONSE_CACHE_TTL}: use 3600..86400 seconds (1-24 h).")
# Only answers generated at or below this temperature are reused (0: deterministic only).
RESPONSE_CACHE_MAX_TEMPERATURE = env_float("RESPONSE_CACHE_MAX_TEMPERATURE", 0.0)
# The temperature a request without one is generated at (decides whether it is cacheable).
RESPONSE_CACHE_DEFAULT_TEMPERATURE = env_float("RESPONSE_CACHE_DEFAULT_TEMPERATURE", 0.0)

# Chat sessions in Redis (session:{user}:{session}), refreshed on activity.
CHAT_SESSION_TTL = env_int("CHAT_SESSION_TTL", 1800)

# --- Health -----------------------------------------------------------------

# Upper bound for one dependency check in /readyz; the checks run concurrently.
READYZ_TIMEOUT = env_float("READYZ_TIMEOUT", 1.5)

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

# Behind a TLS-terminating proxy (see deploy/nginx): trust its X-Forwarded-Proto.
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- REST API ----------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Vacant-house chatbot platform API",
    "DESCRIPTION": "Knowledge, conversations and an OpenAI-compatible chat endpoint.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Logging -----------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "elastic_transport": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

os.makedirs(DATA_DIR, exist_ok=True)
os.makedirs(STATIC_ROOT, exist_ok=True)  # WhiteNoise warns about a missing root
