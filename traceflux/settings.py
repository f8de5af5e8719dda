"""TraceFlux settings: one module, driven by environment variables.

Two modes:
- embedded (the default): SQLite under var/, LocMem cache, Celery eager. Needs no service.
- production (TRACEFLUX_MODE=production): PostgreSQL, Redis, a Celery broker, secure cookies.
  Anything production needs and does not have fails at import time, loudly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TRACEFLUX_VAR_DIR", BASE_DIR / "var"))


# --- small helpers that fail loudly -----------------------------------------------------------------------------


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"environment variable {name} is required in {MODE} mode")
        if default is None:
            return ""
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"environment variable {name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"environment variable {name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"environment variable {name}={value} must be at least {minimum}")
    return value


def env_list(name: str, default: list[str], *, required: bool = False) -> list[str]:
    raw = os.environ.get(name)
    items = [item.strip() for item in (raw or "").split(",") if item.strip()]
    if not items:
        if required:
            raise ImproperlyConfigured(f"environment variable {name} is required in {MODE} mode")
        return list(default)
    return items


MODE = os.environ.get("TRACEFLUX_MODE", "embedded").strip().lower()
if MODE not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"TRACEFLUX_MODE={MODE!r} is not one of: embedded, production")
PRODUCTION = MODE == "production"

# --- core --------------------------------------------------------------------------------------------------------

if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY", required=True)
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in production mode")
else:
    # A fixed development key: the embedded mode is for one machine, never for the internet.
    SECRET_KEY = env_str("SECRET_KEY", "embedded-development-key-not-for-production-0123456789abcdefghij")

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required in production mode (comma-separated host names)")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "django_htmx",
    "django_ratelimit",
    "traceflux.audit",
    "incidents",
    "artifacts",
    "approvals",
    "replays",
]

MIDDLEWARE = [
    "traceflux.metrics.ResponseMetricsMiddleware",  # first: counts every response, the other middleware's included
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "traceflux.audit.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "traceflux.urls"
WSGI_APPLICATION = "traceflux.wsgi.application"

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
                "approvals.context_processors.approvals",
            ],
        },
    },
]

# --- database ----------------------------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", required=PRODUCTION)
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "traceflux.sqlite3",
            # Writers wait for the lock instead of failing at once; SQLite serialises writes anyway.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache and rate limits ---------------------------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", required=PRODUCTION)
# Each xdist worker gets its own key space, so parallel tests never share rate-limit counters.
CACHE_KEY_PREFIX = "tf" + os.environ.get("PYTEST_XDIST_WORKER", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
    SILENCED_SYSTEM_CHECKS: list[str] = []
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": CACHE_KEY_PREFIX}}
    # django-ratelimit refuses a per-process cache because counters would not be shared between processes.
    # The embedded mode is one process by definition, so the check is silenced here and only here.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

RATELIMIT_USE_CACHE = "default"
# Every rate the product enforces, in one place (django-ratelimit syntax: count/period).
TRACEFLUX_RATE_LIMITS = {
    "uploads": env_str("TRACEFLUX_RATE_UPLOADS", "30/m"),
    "heartbeats": env_str("TRACEFLUX_RATE_HEARTBEATS", "120/m"),
    "commands": env_str("TRACEFLUX_RATE_COMMANDS", "120/m"),
    "enroll": env_str("TRACEFLUX_RATE_ENROLL", "10/m"),
    "signing_keys": env_str("TRACEFLUX_RATE_SIGNING_KEYS", "60/m"),
    # Sign-in attempts on the console's login page (traceflux.login), per client address and per username.
    "login_ip": env_str("TRACEFLUX_RATE_LOGIN_IP", "10/m"),
    "login_username": env_str("TRACEFLUX_RATE_LOGIN_USERNAME", "5/m"),
}
# A JSON request body larger than this is refused with 413 before it is read (judged by its Content-Length).
TRACEFLUX_MAX_JSON_BODY = env_int("TRACEFLUX_MAX_JSON_BODY", 4 * 1024 * 1024, minimum=1024)
# The largest artifact file an agent may upload. A Content-Length over it (plus a little room for the form's other
# parts) is refused before the body is read; a body that grows past it is cut off as soon as it does. JSON documents
# inside an upload (a snapshot, a bundle's manifest) are bounded by TRACEFLUX_MAX_JSON_BODY as well.
# Uploads stream to FILE_UPLOAD_TEMP_DIR when it is set, else to MEDIA_ROOT/tmp (the same disk as the artifact store).
TRACEFLUX_MAX_UPLOAD_BYTES = env_int("TRACEFLUX_MAX_UPLOAD_BYTES", 64 * 1024 * 1024, minimum=1)

# --- auth and permissions ----------------------------------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# No guardian anonymous user: anonymous visitors see nothing and are sent to the login page.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "dashboard"

# Change reasons are the "why" of a transition, written by people: a 100-character column would cut them off.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- audit log ---------------------------------------------------------------------------------------------------


def _derived_key(purpose: str) -> str:
    """A per-purpose key derived from SECRET_KEY, so one leaked derived key does not reveal the others."""
    return hmac.new(SECRET_KEY.encode(), purpose.encode(), hashlib.sha256).hexdigest()


AUDIT_HMAC_KEY = env_str("AUDIT_HMAC_KEY", _derived_key("traceflux.audit.chain"))
AGENT_KEY_HMAC_KEY = env_str("AGENT_KEY_HMAC_KEY", _derived_key("traceflux.agent-keys"))
ENROLLMENT_TOKEN_HMAC_KEY = env_str("ENROLLMENT_TOKEN_HMAC_KEY", _derived_key("traceflux.enrollment-tokens"))
USER_TOKEN_HMAC_KEY = env_str("USER_TOKEN_HMAC_KEY", _derived_key("traceflux.user-tokens"))
# The chain head is appended here (JSON lines, append-only) by the beat task traceflux.tasks.anchor_audit_chain and by
# `manage.py audit_anchor`; audit_verify checks the chain against the latest line. Outside the database on purpose:
# in production put it where the database's users cannot write, and where workers and audit_verify all see it.
TRACEFLUX_AUDIT_ANCHOR_FILE = Path(env_str("TRACEFLUX_AUDIT_ANCHOR_FILE", str(VAR_DIR / "audit" / "anchors.jsonl")))
TRACEFLUX_AUDIT_ANCHOR_INTERVAL = env_int("TRACEFLUX_AUDIT_ANCHOR_INTERVAL_SECONDS", 60, minimum=10)

# --- signing keys (traceflux.signing) ----------------------------------------------------------------------------

# Ed25519 private keys (PEM, PKCS#8) that sign the approval credentials agents verify. Files, never database rows:
# whoever can write to the database still cannot forge an approved action. The first file signs; all are published.
_signing_key_files = env_list("TRACEFLUX_SIGNING_KEY_FILES", [], required=PRODUCTION)
TRACEFLUX_SIGNING_KEY_FILES = [Path(name) for name in _signing_key_files] or [VAR_DIR / "signing" / "ed25519.pem"]
# Only the embedded mode's own default key is made on first use; a file an operator named must exist.
TRACEFLUX_SIGNING_KEY_GENERATE = not _signing_key_files
# Public keys (PEM) of retired signers: published for verification only, so credentials they signed stay valid until
# they expire while the new key signs.
TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = [Path(name) for name in env_list("TRACEFLUX_SIGNING_PUBLIC_KEY_FILES", [])]

# --- REST API ----------------------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Not DRF's default (session and HTTP Basic): Basic would let anyone try passwords on any API URL (the schema's
    # included) past the login throttle (traceflux.login). The APIs name their own: agent keys, personal tokens.
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "incidents.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TraceFlux API",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "DESCRIPTION": "The agent API. The reference, with examples and the meaning of every status code, is docs/api.md.",
    "SERVE_INCLUDE_SCHEMA": False,
    # No validator badge: Swagger UI would otherwise send the schema to validator.swagger.io. The docs stay offline.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Several models have a "status": give each choice set its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "HeartbeatStatusEnum": "incidents.models.HeartbeatStatus",
        "CommandStatusEnum": "incidents.models.CommandStatus",
        "CommandAckStatusEnum": ["succeeded", "failed"],
        "ApprovalStatusEnum": "approvals.models.ApprovalStatus",
        "ReplayStatusEnum": "replays.models.ReplayStatus",
    },
}

# --- Celery ------------------------------------------------------------------------------------------------------

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", required=PRODUCTION)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND")
# Without a broker, tasks run in-process at enqueue time: the embedded mode needs no worker.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
# Replays run on their own queue, so long runs never hold up the short periodic tasks (docs/operations.md).
CELERY_TASK_ROUTES = {"replays.tasks.run_replay": {"queue": "replays"}}
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Only relevant with a Redis broker: an unacknowledged task is redelivered after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "incidents.prune_heartbeats": {"task": "incidents.tasks.prune_heartbeats", "schedule": timedelta(hours=1)},
    "incidents.expire_overdue_commands": {
        "task": "incidents.tasks.expire_overdue_commands",
        "schedule": timedelta(minutes=1),
    },
    "approvals.expire_overdue_approvals": {
        "task": "approvals.tasks.expire_overdue_approvals",
        "schedule": timedelta(minutes=1),
    },
    "replays.reap": {"task": "replays.tasks.reap", "schedule": timedelta(minutes=1)},
    # The audit explorer shows the newest result as the chain's status (traceflux.audit.tasks.verify_chain).
    "audit.verify_chain": {"task": "traceflux.audit.tasks.verify_chain", "schedule": timedelta(hours=6)},
    # Appends the chain head to TRACEFLUX_AUDIT_ANCHOR_FILE when it moved; a run no worker took in time is dropped.
    "audit.anchor_chain": {
        "task": "traceflux.tasks.anchor_audit_chain",
        "schedule": timedelta(seconds=TRACEFLUX_AUDIT_ANCHOR_INTERVAL),
        "options": {"expires": TRACEFLUX_AUDIT_ANCHOR_INTERVAL},
    },
}
# Project-level tasks (traceflux is not an installed app, so autodiscovery does not find them).
CELERY_IMPORTS = ["traceflux.tasks"]

# --- i18n, static, media -----------------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request when it is missing
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Uploaded artifacts, content-addressed (artifacts/sha256/ab/cd/<sha256>): the same bytes always land at the same
    # name, so writing a name that exists is harmless and concurrent uploads of one file never pick alternative names.
    "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"allow_overwrite": True}},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- security (production) ---------------------------------------------------------------------------------------

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    SECURE_REFERRER_POLICY = "same-origin"  # Django's default, stated: links out carry no path or query
    SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- operations endpoints (traceflux.ops) ------------------------------------------------------------------------

# /metrics needs `Authorization: Bearer <this>` when it is set. Unset, /metrics is open in the embedded mode and
# refused (403) in production. Under several gunicorn workers also set PROMETHEUS_MULTIPROC_DIR (docs/operations.md).
TRACEFLUX_METRICS_TOKEN = env_str("TRACEFLUX_METRICS_TOKEN")

# --- product settings --------------------------------------------------------------------------------------------

# Resolves which environments' audit events a non-superuser may browse (the audit layer imports no app).
TRACEFLUX_AUDIT_VISIBLE_ENVIRONMENTS = "incidents.selectors.visible_environment_slugs"
TRACEFLUX_DEFAULT_APPROVAL_TTL = timedelta(hours=env_int("TRACEFLUX_DEFAULT_APPROVAL_TTL_HOURS", 24, minimum=1))
# Approvers are emailed when a request is made (approvals.notifications); the console backend prints the emails.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "traceflux@localhost")
# Links in emails point here.
TRACEFLUX_BASE_URL = env_str("TRACEFLUX_BASE_URL", "http://127.0.0.1:8000")
# A break-glass approval expires this soon after it is granted (approvals.services.approval_break_glass).
TRACEFLUX_BREAK_GLASS_TTL = timedelta(minutes=15)
# Heartbeats older than this are deleted by the incidents.tasks.prune_heartbeats beat task.
TRACEFLUX_HEARTBEAT_RETENTION = timedelta(days=env_int("TRACEFLUX_HEARTBEAT_RETENTION_DAYS", 14, minimum=1))
# An agent whose last heartbeat is older than this (or that never sent one) is stale.
TRACEFLUX_AGENT_STALE_AFTER = timedelta(seconds=env_int("TRACEFLUX_AGENT_STALE_AFTER_SECONDS", 300, minimum=10))
# An agent that received at least this many 401, 403 and 429 answers in the last hour (incidents.failures) is an
# escalation point: the incident investigation page shows a banner, the agent's console page says "escalate".
TRACEFLUX_ESCALATE_AUTH_FAILURES = env_int("TRACEFLUX_ESCALATE_AUTH_FAILURES", 10, minimum=1)
# How long a delivered command stays leased to its agent before an unacknowledged one is offered again.
TRACEFLUX_COMMAND_LEASE = timedelta(seconds=env_int("TRACEFLUX_COMMAND_LEASE_SECONDS", 60, minimum=5))
# Replay executions (replays.tasks.run_replay on the `replays` queue; replays.services.replay_reap as a beat task).
# A queued replay no worker took within this long is enqueued once more, then failed.
TRACEFLUX_REPLAY_QUEUED_TIMEOUT = timedelta(seconds=env_int("TRACEFLUX_REPLAY_QUEUED_TIMEOUT_SECONDS", 600, minimum=10))
# A replay validating or running for longer than this is failed by the reaper (its worker is presumed gone).
TRACEFLUX_REPLAY_RUNNING_TIMEOUT = timedelta(
    seconds=env_int("TRACEFLUX_REPLAY_RUNNING_TIMEOUT_SECONDS", 1800, minimum=30)
)
# Celery's soft and hard time limits for one replay task.
TRACEFLUX_REPLAY_SOFT_TIME_LIMIT = env_int("TRACEFLUX_REPLAY_SOFT_TIME_LIMIT_SECONDS", 900, minimum=10)
TRACEFLUX_REPLAY_TIME_LIMIT = env_int("TRACEFLUX_REPLAY_TIME_LIMIT_SECONDS", 960, minimum=20)
# An execute's commands (and their signed credentials) expire this long after dispatch.
TRACEFLUX_REPLAY_COMMAND_TTL = timedelta(seconds=env_int("TRACEFLUX_REPLAY_COMMAND_TTL_SECONDS", 900, minimum=30))
