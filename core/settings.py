"""Quorum's settings: every value comes from the environment, with a safe default or a loud failure.

`.env.example` lists every variable. Nothing here reaches the network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    """A string variable, stripped; the default when unset or empty."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off; anything else is an error."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int) -> int:
    """An integer variable."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    """A number variable."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list variable."""
    raw = env_str(name)
    return [part.strip() for part in raw.split(",") if part.strip()] if raw else default


def env_path(name: str, default: Path) -> Path:
    """A folder variable; a relative path is taken from the repository root."""
    raw = env_str(name)
    return (BASE_DIR / raw).resolve() if raw else default


VAR_DIR = env_path("QUORUM_VAR_DIR", BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: export SECRET_KEY=<a long random string> "
            "(for local development, DEBUG=1 uses a throwaway key instead)"
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "core",
    "labelling",
]

# SQLite has no covering indexes: it builds them without their included columns, which only
# PostgreSQL's index-only scans read (labelling.Label's label_project_item_cover).
SILENCED_SYSTEM_CHECKS = ["models.W040"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_config(url: str) -> dict[str, Any]:
    """The Django DATABASES entry for a DATABASE_URL, or the embedded SQLite file when empty."""
    if not url:
        # The embedded database lives in var/; create the folder on first use.
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "quorum.sqlite3",
            # WAL lets readers work while one writer writes; IMMEDIATE takes the write lock at
            # BEGIN so that two writers queue up instead of failing with "database is locked".
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    scheme = urlparse(url).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported: use postgres://… or sqlite:///…"
        )
    return dict(dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True))


DATABASE_URL = env_str("DATABASE_URL")
# The labelling loop's few fixed statements are prepared once per PostgreSQL connection (see
# core/rows.py; Django's own queries never are). Turn it off behind a connection pooler that
# does not keep prepared statements (PgBouncer in transaction mode before 1.21, or without
# max_prepared_statements).
PREPARED_STATEMENTS = env_bool("QUORUM_PREPARED_STATEMENTS", True)
DATABASES = {"default": database_config(DATABASE_URL)}
if PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # psycopg prepares nothing while this is None (Django's default); only the server-binding
    # cursor of core/rows.py asks it to.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and urlparse(REDIS_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis:// or rediss://, got {REDIS_URL!r}"
    )

# Celery: with REDIS_URL unset, tasks run in-process (eagerly) so that the embedded default needs
# no other service; `make run` says so on start.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How often the periodic scheduler expires leases and recomputes the projects whose labels
# changed since their last consensus (what catches up after Redis or a worker was down).
EXPIRE_LEASES_SECONDS = env_float("QUORUM_EXPIRE_LEASES_SECONDS", 30.0)
CATCH_UP_SECONDS = env_float("QUORUM_CATCH_UP_SECONDS", 300.0)
# How often workers prepare the release lines decided items lack (PostgreSQL; see
# labelling/releases/prepared.py); consensus runs prepare theirs at once.
PREPARE_LINES_SECONDS = env_float("QUORUM_PREPARE_LINES_SECONDS", 600.0)
CELERY_BEAT_SCHEDULE = {
    "resend-queued-jobs": {"task": "labelling.resend_queued_jobs", "schedule": 60.0},
    "expire-leases": {"task": "labelling.expire_leases", "schedule": EXPIRE_LEASES_SECONDS},
    "aggregate-stale-projects": {
        "task": "labelling.aggregate_stale_projects",
        "schedule": CATCH_UP_SECONDS,
    },
    "sync-crowd-batches": {"task": "labelling.sync_crowd_batches", "schedule": 120.0},
    "prepare-release-lines": {
        "task": "labelling.prepare_release_lines",
        "schedule": PREPARE_LINES_SECONDS,
    },
}
# A task whose worker died (killed, out of memory, machine lost) is not acknowledged (acks_late);
# Redis hands it to another worker once this many seconds have passed since it was taken. It
# must exceed the hard time limit, or a task still running would be handed out a second time.
BROKER_VISIBILITY_TIMEOUT = env_int(
    "QUORUM_BROKER_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 300
)
# A web request must not hang when Redis is down: fail the publish fast and let the caller
# record that the job still waits to be sent.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}

CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # An unreachable Redis fails a cache call within a second instead of hanging the
            # request; the callers carry on without the cache (see labelling/services/debounce.py).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

EXPORT_STORAGE = env_str("EXPORT_STORAGE", f"file://{VAR_DIR / 'exports'}")
_export = urlparse(EXPORT_STORAGE)
if not (
    (_export.scheme == "file" and not _export.netloc and _export.path.startswith("/"))
    or (_export.scheme == "s3" and _export.netloc)
):
    raise ImproperlyConfigured(
        f"EXPORT_STORAGE must be file:///absolute/dir or s3://bucket/prefix, got {EXPORT_STORAGE!r}"
    )
# S3-compatible stores (MinIO, Ceph…); boto3 reads the other AWS_* variables itself.
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL", "")
# How long a presigned download link of a release stays valid, in seconds.
RELEASE_URL_SECONDS = env_int("QUORUM_RELEASE_URL_SECONDS", 3600)
# On PostgreSQL, how many database connections write a large release at once, each building and
# sorting its own run of rows (a core each); 1 writes every release on one connection.
RELEASE_CONNECTIONS = env_int("QUORUM_RELEASE_CONNECTIONS", 2)
if RELEASE_CONNECTIONS < 1:
    raise ImproperlyConfigured(
        f"QUORUM_RELEASE_CONNECTIONS must be at least 1, got {RELEASE_CONNECTIONS}"
    )
# The code version a release's manifest names; default: the git commit of the checkout.
CODE_VERSION = env_str("QUORUM_CODE_VERSION", "")
MTURK_ENDPOINT = env_str("MTURK_ENDPOINT", "sandbox")
if MTURK_ENDPOINT not in {"sandbox", "production"} and urlparse(MTURK_ENDPOINT).scheme not in {
    "http",
    "https",
}:
    raise ImproperlyConfigured(
        f"MTURK_ENDPOINT must be sandbox, production or an http(s) URL, got {MTURK_ENDPOINT!r}"
    )

# Amazon's worker sites: the only pages that may frame /ext/mturk/{slug}/, and the only hosts its
# answers are posted on to (turkSubmitTo). Tests add a local stand-in.
MTURK_WORKER_HOSTS = env_list(
    "MTURK_WORKER_HOSTS", ["https://www.mturk.com", "https://workersandbox.mturk.com"]
)
for _host in MTURK_WORKER_HOSTS:
    _parsed = urlparse(_host)
    if _parsed.scheme not in {"http", "https"} or not _parsed.netloc or _parsed.path.strip("/"):
        raise ImproperlyConfigured(
            f"MTURK_WORKER_HOSTS holds {_host!r}: use origins like https://www.mturk.com"
        )
# The address workers reach this server at (https://…): outside platforms link to its pages.
PUBLIC_URL = env_str("QUORUM_PUBLIC_URL").rstrip("/")
if PUBLIC_URL and (
    urlparse(PUBLIC_URL).scheme not in {"http", "https"} or not urlparse(PUBLIC_URL).netloc
):
    raise ImproperlyConfigured(f"QUORUM_PUBLIC_URL must be an http(s) URL, got {PUBLIC_URL!r}")

# Where `make backup` (manage.py backup) writes its copies of the database.
BACKUP_DIR = env_path("QUORUM_BACKUP_DIR", VAR_DIR / "backups")
# Uploaded prediction files wait here for their background import; several web and worker
# machines need this folder shared (see OPERATIONS.md).
UPLOAD_DIR = env_path("QUORUM_UPLOAD_DIR", VAR_DIR / "uploads")
# Uploads up to this size import inside the request; larger ones become a background job.
SYNC_IMPORT_MAX_BYTES = env_int("QUORUM_SYNC_IMPORT_MAX_BYTES", 2 * 1024 * 1024)
# How long a labeller holds an item before it goes back to the queue (renewed by a heartbeat).
LEASE_SECONDS = env_int("QUORUM_LEASE_SECONDS", 600)
# New labellers see this many gold checks first (where the project has gold items).
NEW_LABELLER_GOLD = env_int("QUORUM_NEW_LABELLER_GOLD", 3)
# Label submissions allowed per labeller (DRF throttle rate: N/second|minute|hour).
LABEL_RATE = env_str("QUORUM_LABEL_RATE", "120/minute")
# Consensus is recomputed this many seconds after labels arrive (one run per burst); with
# in-process jobs, at once for projects of at most INLINE_CONSENSUS_MAX_LABELS labels.
CONSENSUS_DEBOUNCE_SECONDS = env_int("QUORUM_CONSENSUS_DEBOUNCE_SECONDS", 10)
INLINE_CONSENSUS_MAX_LABELS = env_int("QUORUM_INLINE_CONSENSUS_MAX_LABELS", 20_000)
# Model evaluation on problems runs this long after trusted labels or problems change (one run per
# burst); with in-process jobs, at once for projects of at most this many predictions.
EVALUATION_DEBOUNCE_SECONDS = env_int("QUORUM_EVALUATION_DEBOUNCE_SECONDS", 10)
INLINE_EVALUATION_MAX_PREDICTIONS = env_int("QUORUM_INLINE_EVALUATION_MAX_PREDICTIONS", 200_000)
# Prediction monitoring flags a day whose predicted class distribution is further than this
# (total variation distance, 0 to 1) from the training-time one.
DRIFT_MAX_SHIFT = env_float("QUORUM_DRIFT_MAX_SHIFT", 0.1)
# Dawid-Skene needs a median of this many labels per labeller; below, smoothed vote shares.
DAWID_SKENE_MIN_LABELS = env_int("QUORUM_DAWID_SKENE_MIN_LABELS", 20)
# The accuracy assumed of every labeller until Dawid-Skene can estimate it.
ASSUMED_LABELLER_ACCURACY = env_float("QUORUM_ASSUMED_LABELLER_ACCURACY", 0.8)
if not 0.5 < ASSUMED_LABELLER_ACCURACY < 1:
    raise ImproperlyConfigured("QUORUM_ASSUMED_LABELLER_ACCURACY must be between 0.5 and 1")
# Projects with more predictions than this are queued by a background job.
SYNC_QUEUE_MAX_PREDICTIONS = env_int("QUORUM_SYNC_QUEUE_MAX_PREDICTIONS", 200_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("QUORUM_MAX_JSON_BODY_BYTES", 20 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed names once `collectstatic` has written its manifest; plain names before
    # (development, tests), so that no page fails for want of it.
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if (STATIC_ROOT / "staticfiles.json").exists() and not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"labels": LABEL_RATE},
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Quorum API",
    "DESCRIPTION": "Human-in-the-loop labelling: predictions in, checked releases out.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE


def proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER as Django wants it: the header a TLS proxy sets, and its value."""
    if not raw:
        return None
    name, _, value = raw.partition("=")
    name, value = name.strip(), value.strip() or "https"
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r} is not a header name: use e.g. X-Forwarded-Proto "
            "(or X-Forwarded-Proto=https)"
        )
    return "HTTP_" + name.upper().replace("-", "_"), value


# TLS. Behind a proxy that ends TLS, SECURE_PROXY_SSL_HEADER names the header it sets (only when
# the proxy always overwrites it: a client could send it too). With DEBUG off, plain HTTP is
# redirected to HTTPS and browsers are told to use HTTPS for a year (HSTS is only sent over HTTPS).
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env_str("SECURE_PROXY_SSL_HEADER"))
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS must be 0 or more, got {SECURE_HSTS_SECONDS}")
# Paths served over plain HTTP even with SECURE_SSL_REDIRECT: the health check a load balancer
# calls on the node's own address.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Headers on every response (core/security.py adds the Content-Security-Policy).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Where payload images may come from: the labelling pages show data: and http(s) image URLs.
CSP_IMG_SRC = env_str("QUORUM_CSP_IMG_SRC", "'self' data: https: http:")

# Failed logins allowed per username and client address within LOGIN_FAILURE_WINDOW seconds;
# more answer 429 until the window has passed. The count lives in the cache (Redis when set, so
# that every web node shares it).
LOGIN_FAILURE_LIMIT = env_int("QUORUM_LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_WINDOW = env_int("QUORUM_LOGIN_FAILURE_WINDOW", 900)
# The header a proxy sets to the client's address (e.g. X-Real-IP); unset: the peer address.
CLIENT_IP_HEADER = env_str("QUORUM_CLIENT_IP_HEADER")
if CLIENT_IP_HEADER and not re.fullmatch(r"[A-Za-z0-9-]+", CLIENT_IP_HEADER):
    raise ImproperlyConfigured(
        f"QUORUM_CLIENT_IP_HEADER={CLIENT_IP_HEADER!r} is not a header name: use e.g. X-Real-IP"
    )
for _name, _value in (
    ("QUORUM_LOGIN_FAILURE_LIMIT", LOGIN_FAILURE_LIMIT),
    ("QUORUM_LOGIN_FAILURE_WINDOW", LOGIN_FAILURE_WINDOW),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {_value}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Every line passes through core/logs.py, which redacts tokens, passwords and secret values.
    "filters": {"redact": {"()": "core.logs.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "quorum": {
            "handlers": ["console"],
            "level": env_str("LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
