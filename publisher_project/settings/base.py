"""Settings shared by every environment; the only module that reads the environment."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

# True in production.py, and so in every settings module built on it: the commands for a developer's
# machine (bootstrap_demo with its demo/publish-me superuser, runlocal) refuse to run there.
PRODUCTION = False

SECRET_KEY: str = env.str("SECRET_KEY", default="")
DEBUG: bool = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Read here, applied by production.py only (off behind a TLS-terminating proxy
# that already redirects).
SECURE_SSL_REDIRECT_IN_PRODUCTION: bool = env.bool("SECURE_SSL_REDIRECT", default=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    # Before django_dramatiq: our rundramatiq (shutdown timeout from settings) wins.
    "publishing",
    # Builds the broker from DRAMATIQ_BROKER when Django loads; its Task admin is unregistered
    # (publishing/admin.py) and its table no longer written.
    "django_dramatiq",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn: no separate file server to run.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it sees exceptions from the views, before any other middleware turns them into a 500.
    "publisher_project.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "publisher_project.urls"
# The API's and the metrics' CSRF refusals in the JSON error envelope, like every other error there.
CSRF_FAILURE_VIEW = "publisher_project.exception_handler.csrf_failure"
WSGI_APPLICATION = "publisher_project.wsgi.application"
ASGI_APPLICATION = "publisher_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = environ.Env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # A web process and worker processes write at once: WAL lets readers
        # run beside the writer, IMMEDIATE takes the write lock up front (no
        # deadlocking lock upgrades) and the timeout waits for it instead of
        # raising "database is locked".
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        # Persistent: a connection per request or job was most of an initiate's
        # and a short job's cost (docs/benchmarks.md). The health check makes a
        # connection that a database restart broke reconnect, not fail a request.
        config["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
        config["CONN_HEALTH_CHECKS"] = True
        if config["ENGINE"].startswith("django.db.backends.postgresql"):
            # A database that does not answer fails a request (health, metrics,
            # initiate) in seconds, not the kernel's minutes. From the URL
            # (`?connect_timeout=`) when given there.
            config.setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    return config


# Seconds a server database's connection is kept for the next request or job
# (Django's CONN_MAX_AGE; 0 closes it after each). Each web thread and each
# worker thread then holds one: size max_connections for them.
DATABASE_CONN_MAX_AGE: int = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASE_URL: str = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'publisher.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Outside VAR_DIR in the image (STATIC_ROOT=/app/static), so that a volume on var/ cannot hide it.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))

LOGIN_URL = "/api-auth/login/"
LOGIN_REDIRECT_URL = "/api/v1/"

# --- Jobs -------------------------------------------------------------------

REDIS_URL: str = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# redis://, rediss://, unix:// or amqp://; stub:// is the in-memory broker of
# unit tests.
BROKER_URL: str = env.str("BROKER_URL", default=REDIS_URL)
# Web requests must never wait long on a sick broker: one short
# socket timeout, then the circuit breaker answers 503 at once.
# Prefix of every Redis key the broker writes; lets several deployments (or
# test runs) share one Redis.
BROKER_NAMESPACE: str = env.str("BROKER_NAMESPACE", default="dramatiq")
PUBLISHING_BROKER_SOCKET_TIMEOUT: float = env.float("PUBLISHING_BROKER_SOCKET_TIMEOUT", default=0.5)
PUBLISHING_BROKER_COOLDOWN: float = env.float("PUBLISHING_BROKER_COOLDOWN", default=2.0)
# Workers may wait longer, and retry, rather than lose an ack or a retry.
PUBLISHING_WORKER_SOCKET_TIMEOUT: float = env.float("PUBLISHING_WORKER_SOCKET_TIMEOUT", default=5.0)
# How long a dead worker's unacked messages wait before redelivery (Redis).
PUBLISHING_HEARTBEAT_TIMEOUT_MS: int = env.int("PUBLISHING_HEARTBEAT_TIMEOUT_MS", default=60_000)

# Configurable so that deployments (and test runs) can share one RabbitMQ.
PUBLISHING_QUEUE: str = env.str("PUBLISHING_QUEUE", default="publishing-builds")
PUBLISHING_MAX_RETRIES: int = env.int("PUBLISHING_MAX_RETRIES", default=3)
PUBLISHING_MIN_BACKOFF_MS: int = env.int("PUBLISHING_MIN_BACKOFF_MS", default=2_000)
PUBLISHING_MAX_BACKOFF_MS: int = env.int("PUBLISHING_MAX_BACKOFF_MS", default=300_000)
PUBLISHING_TIME_LIMIT_MS: int = env.int("PUBLISHING_TIME_LIMIT_MS", default=30 * 60_000)
# N job starts per rolling D seconds across all workers ("5/60s"); "0" is off.
PUBLISHING_RATE_LIMIT: str = env.str("PUBLISHING_RATE_LIMIT", default="5/60s")
# While the limit is reached, a free slot goes to the waiting project owner with the fewest starts in
# the window; off, to whichever deferred message asks first.
PUBLISHING_RATE_LIMIT_FAIR: bool = env.bool("PUBLISHING_RATE_LIMIT_FAIR", default=True)
# Cancellations must outlive any queue wait, backoff or rate-limit delay.
PUBLISHING_ABORT_TTL_MS: int = env.int("PUBLISHING_ABORT_TTL_MS", default=24 * 3600 * 1000)
# A running attempt refreshes its lease every LEASE_TIMEOUT/6 s; one silent
# for LEASE_TIMEOUT s belongs to a dead worker and is requeued. Together with
# the interval they bound how long a killed worker's job waits (15-20 s):
# a lease that runs out under a live attempt costs wasted work, never a second
# publication (the old attempt is fenced out), so they can be short.
PUBLISHING_LEASE_TIMEOUT: int = env.int("PUBLISHING_LEASE_TIMEOUT", default=15)
PUBLISHING_RECONCILE_INTERVAL: int = env.int("PUBLISHING_RECONCILE_INTERVAL", default=5)
# Rows younger than this are left alone (their message may be on its way).
PUBLISHING_RECONCILE_GRACE: int = env.int("PUBLISHING_RECONCILE_GRACE", default=60)
PUBLISHING_SHUTDOWN_TIMEOUT: int = env.int("PUBLISHING_SHUTDOWN_TIMEOUT", default=30)
PUBLISHING_RETENTION_COMPLETED: int = env.int("PUBLISHING_RETENTION_COMPLETED", default=100)
PUBLISHING_RETENTION_FAILED: int = env.int("PUBLISHING_RETENTION_FAILED", default=500)

PUBLISHING_ALLOW_LOCAL_SOURCES: bool = env.bool("PUBLISHING_ALLOW_LOCAL_SOURCES", default=False)
PUBLISHING_ALLOW_PRIVATE_TARGETS: bool = env.bool("PUBLISHING_ALLOW_PRIVATE_TARGETS", default=False)
PUBLISHING_ALLOW_USER_BUILD_COMMANDS: bool = env.bool("PUBLISHING_ALLOW_USER_BUILD_COMMANDS", default=False)

# The folders file:// targets may lie under, absolute, comma-separated; none (the default) allows
# no file:// target. The worker writes there with its own rights, which reach much further than
# any user's: every other folder stays out of a target's reach.
PUBLISHING_FILE_STORE_ROOTS: list[str] = [
    os.path.normpath(root) for root in env.list("PUBLISHING_FILE_STORE_ROOTS", default=[]) if root.strip()
]
if not all(os.path.isabs(root) for root in PUBLISHING_FILE_STORE_ROOTS):
    raise ImproperlyConfigured(
        f"PUBLISHING_FILE_STORE_ROOTS={PUBLISHING_FILE_STORE_ROOTS!r}: each folder must be an absolute path"
    )
# A file:// store's folders and files are the worker's user's only (0700/0600); with a group name
# or gid here they are also readable by that group (0750/0640), e.g. a web server that serves them.
PUBLISHING_STORE_GROUP: str = env.str("PUBLISHING_STORE_GROUP", default="")
# s3:// stores (publishing/pipeline/stores/s3.py; docs/deployment.md for AWS S3, MinIO and R2). The
# places s3:// targets may lie under, `s3://bucket` or `s3://bucket/prefix`, comma-separated; none (the
# default) allows no s3:// target: the workers' credentials may reach buckets no user should.
PUBLISHING_S3_STORE_ROOTS: list[str] = [
    root.strip() for root in env.list("PUBLISHING_S3_STORE_ROOTS", default=[]) if root.strip()
]
if not all(
    re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?", root) for root in PUBLISHING_S3_STORE_ROOTS
):
    raise ImproperlyConfigured(
        f"PUBLISHING_S3_STORE_ROOTS={PUBLISHING_S3_STORE_ROOTS!r}: each must be s3://bucket or s3://bucket/prefix"
    )
# The S3 API's address: empty for AWS S3; MinIO's or R2's URL otherwise. Credentials and region
# come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).
PUBLISHING_S3_ENDPOINT_URL: str = env.str("PUBLISHING_S3_ENDPOINT_URL", default="")
# How requests name the bucket: auto, path (http://host/bucket/key: most MinIO setups) or virtual
# (http://bucket.host/key).
PUBLISHING_S3_ADDRESSING_STYLE: str = (
    env.str("PUBLISHING_S3_ADDRESSING_STYLE", default="auto").strip().lower()
)
if PUBLISHING_S3_ADDRESSING_STYLE not in ("auto", "path", "virtual"):
    raise ImproperlyConfigured(
        f"PUBLISHING_S3_ADDRESSING_STYLE={PUBLISHING_S3_ADDRESSING_STYLE!r}: expected auto, path or virtual."
    )
PUBLISHING_PIPELINE: str = env.str("PUBLISHING_PIPELINE", default="publishing.pipeline.DefaultPipeline")
PUBLISHING_WORKSPACE_DIR: str = env.str("PUBLISHING_WORKSPACE_DIR", default="")
PUBLISHING_CHECKOUT_TIMEOUT: int = env.int("PUBLISHING_CHECKOUT_TIMEOUT", default=300)
PUBLISHING_BUILD_TIMEOUT: int = env.int("PUBLISHING_BUILD_TIMEOUT", default=900)
PUBLISHING_SUBMIT_TIMEOUT: int = env.int("PUBLISHING_SUBMIT_TIMEOUT", default=60)
PUBLISHING_LOG_LIMIT: int = env.int("PUBLISHING_LOG_LIMIT", default=64 * 1024)
# The end of each attempt's own log, kept with its record (API detail, admin).
PUBLISHING_ATTEMPT_LOG_EXCERPT: int = env.int("PUBLISHING_ATTEMPT_LOG_EXCERPT", default=4 * 1024)

# The build sandbox (publishing/pipeline/sandbox.py, docs/security.md): each build in bubblewrap
# namespaces, seeing only the system's /usr, a few files of /etc and its own checkout.
# required (also empty, the default): builds fail (SANDBOX_UNAVAILABLE) where bwrap is missing;
# auto: sandboxed where bwrap is on PATH, else unsandboxed with a warning at worker start (the
# local and test settings' default); off: never sandboxed (refused by the production settings).
PUBLISHING_BUILD_SANDBOX: str = env.str("PUBLISHING_BUILD_SANDBOX", default="").strip().lower()
if PUBLISHING_BUILD_SANDBOX not in ("", "required", "auto", "off"):
    raise ImproperlyConfigured(
        f"PUBLISHING_BUILD_SANDBOX={PUBLISHING_BUILD_SANDBOX!r}: expected required, auto or off."
    )
# What a sandboxed build may reach. none: nothing, not even this host (an empty network namespace);
# public: public addresses only, through an HTTP proxy (HTTP_PROXY/HTTPS_PROXY) that judges every
# connection as the service's own outbound HTTP does (never loopback, private, link-local, ...).
PUBLISHING_BUILD_NETWORK: str = env.str("PUBLISHING_BUILD_NETWORK", default="none").strip().lower()
if PUBLISHING_BUILD_NETWORK not in ("none", "public"):
    raise ImproperlyConfigured(
        f"PUBLISHING_BUILD_NETWORK={PUBLISHING_BUILD_NETWORK!r}: expected none or public."
    )
# The uids a root worker runs sandboxed builds as, one per build running on the host at a time:
# uids that no account uses (any range works; it bounds how many builds one host runs at once).
PUBLISHING_SANDBOX_UIDS: str = env.str("PUBLISHING_SANDBOX_UIDS", default="60000-60999")

# Limits of every build, sandboxed or not (publishing/pipeline/build.py); 0 is no limit.
# Who runs unsandboxed builds (sandboxed ones take a uid of PUBLISHING_SANDBOX_UIDS): a user name
# or uid, which a root worker switches to; "worker", the worker's own user whoever it is; empty
# (the default), the worker's own user, except that a root worker refuses to build
# (BUILD_USER_INVALID): as root the process limit does not hold and a build could read the
# worker's secrets, so that takes an explicit "worker".
PUBLISHING_BUILD_USER: str = env.str("PUBLISHING_BUILD_USER", default="")
# Per process, all its threads: with the 900 s timeout a process may keep two cores busy.
PUBLISHING_BUILD_CPU_LIMIT: int = env.int("PUBLISHING_BUILD_CPU_LIMIT", default=1800)
# Address space per process (RLIMIT_AS), which runtimes reserve generously: not resident memory.
PUBLISHING_BUILD_MEMORY_LIMIT: int = env.int("PUBLISHING_BUILD_MEMORY_LIMIT", default=4 * 1024**3)
PUBLISHING_BUILD_FILE_SIZE_LIMIT: int = env.int("PUBLISHING_BUILD_FILE_SIZE_LIMIT", default=2 * 1024**3)
# Processes and threads a build may add to what its user already runs.
PUBLISHING_BUILD_PROCESS_LIMIT: int = env.int("PUBLISHING_BUILD_PROCESS_LIMIT", default=512)
# stdout and stderr together; a build writing more is stopped (the log keeps PUBLISHING_LOG_LIMIT).
PUBLISHING_BUILD_OUTPUT_LIMIT: int = env.int("PUBLISHING_BUILD_OUTPUT_LIMIT", default=16 * 1024**2)
for _limit in (
    "PUBLISHING_BUILD_CPU_LIMIT",
    "PUBLISHING_BUILD_MEMORY_LIMIT",
    "PUBLISHING_BUILD_FILE_SIZE_LIMIT",
    "PUBLISHING_BUILD_PROCESS_LIMIT",
    "PUBLISHING_BUILD_OUTPUT_LIMIT",
):
    # A negative limit would stop every build at once (or, for processes, forbid every fork).
    if globals()[_limit] < 0:
        raise ImproperlyConfigured(f"{_limit}={globals()[_limit]}: a limit is 0 (off) or positive.")

# --- Webhooks ----------------------------------------------------------------

# Its own queue: a delivery never waits behind a backlog of build messages.
PUBLISHING_WEBHOOK_QUEUE: str = env.str("PUBLISHING_WEBHOOK_QUEUE", default=f"{PUBLISHING_QUEUE}-webhooks")
# 10 retries from 10 s doubling (with jitter) up to 1 h: 11 POSTs over about 1.7 to 3.4 hours.
PUBLISHING_WEBHOOK_MAX_RETRIES: int = env.int("PUBLISHING_WEBHOOK_MAX_RETRIES", default=10)
PUBLISHING_WEBHOOK_MIN_BACKOFF_MS: int = env.int("PUBLISHING_WEBHOOK_MIN_BACKOFF_MS", default=10_000)
PUBLISHING_WEBHOOK_MAX_BACKOFF_MS: int = env.int("PUBLISHING_WEBHOOK_MAX_BACKOFF_MS", default=3_600_000)
# Seconds to connect, and then to wait for each part of the answer.
PUBLISHING_WEBHOOK_TIMEOUT: int = env.int("PUBLISHING_WEBHOOK_TIMEOUT", default=10)

# --- Workers on several hosts, and metrics ---------------------------------------------------

# Names this worker host in logs, on each publishing it runs (`worker`) and in
# the list of live workers; two hosts must not share one.
PUBLISHING_WORKER_NAME: str = env.str("PUBLISHING_WORKER_NAME", default=socket.gethostname())
# Dramatiq's Prometheus exposition server, one per `rundramatiq` (0: no metrics
# middleware). Two worker groups on one machine need two ports.
WORKER_METRICS_PORT: int = env.int("WORKER_METRICS_PORT", default=9191)
# 0.0.0.0 in a container, so that Prometheus can reach it.
WORKER_METRICS_HOST: str = env.str("WORKER_METRICS_HOST", default="127.0.0.1")
# When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`. Production refuses to start
# without one unless METRICS_ALLOW_ANONYMOUS says that anyone who reaches /metrics may scrape it (a
# private network, or a proxy that keeps /metrics off the public route).
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
METRICS_ALLOW_ANONYMOUS: bool = env.bool("METRICS_ALLOW_ANONYMOUS", default=False)

DRAMATIQ_BROKER: dict[str, Any] = {
    # A factory rather than a class: it picks Redis, RabbitMQ or the stub
    # broker from BROKER_URL and sets the socket timeouts.
    "BROKER": "publishing.broker.make_broker",
    "OPTIONS": {
        "url": BROKER_URL,
        "namespace": BROKER_NAMESPACE,
        "socket_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
        "heartbeat_timeout": PUBLISHING_HEARTBEAT_TIMEOUT_MS,
    },
    # Listed in full: django-dramatiq's default list names a Prometheus
    # middleware path that dramatiq 2.x no longer has.
    "MIDDLEWARE": [
        *(["publishing.metrics.WorkerMetrics"] if WORKER_METRICS_PORT else []),
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Pipelines",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        # Before the rest of ours: a poison message takes no abort lookup, slot or lease.
        "publishing.worker.from_settings.validation",
        "publishing.worker.from_settings.connections",
        # Order matters: a cancelled message is skipped before it takes a
        # rate-limit slot, and only a started one gets a lease.
        "publishing.worker.from_settings.abort",
        "publishing.worker.from_settings.rate_limit",
        "publishing.worker.from_settings.reconciler",
        "publishing.worker.from_settings.leases",
        "publishing.worker.from_settings.shutdown_deadline",
        # Closes each thread's stale database connections around a message, and all at shutdown.
        # No AdminMiddleware: the publishings and their attempts are the job record.
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# --- API --------------------------------------------------------------------


def _rate(name: str, default: str) -> str:
    """A throttle's rate in DRF's notation ("60/min"); "0" or "" is off."""
    rate: str = env.str(name, default=default).strip()
    if not re.fullmatch(r"0?|[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", rate):
        raise ImproperlyConfigured(f"{name}={rate!r}: expected N/s, N/min, N/hour, N/day or 0.")
    return rate


# initiate and retry calls per user ("60/min", "1000/day"), counted across every web process; "0" or
# "" turns the throttle off. Beyond it: 429 THROTTLED with Retry-After.
PUBLISHING_INITIATE_RATE: str = _rate("PUBLISHING_INITIATE_RATE", "60/min")
# Failed logins (token endpoint, admin and browsable API login pages) per username and per client
# address, in clock-aligned periods, counted across every web process. Beyond either: 429 with
# Retry-After until the period ends, for every attempt of that username or address, right password
# or not. A successful login spends nothing.
LOGIN_FAILURES_PER_USERNAME: str = _rate("LOGIN_FAILURES_PER_USERNAME", "10/hour")
LOGIN_FAILURES_PER_ADDRESS: str = _rate("LOGIN_FAILURES_PER_ADDRESS", "50/hour")
# Reverse proxies in front of the web tier that append to X-Forwarded-For: the client address is the
# one the outermost of them saw. 0 (the default) believes no header: REMOTE_ADDR is the client.
NUM_PROXIES: int = env.int("NUM_PROXIES", default=0)

# The throttle's counters must be shared by every gunicorn worker and web host: Redis. A request
# never waits on a sick Redis (one short timeout, no retries; the throttle then lets requests
# through). The default cache stays per process: nothing else needs sharing.
CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{BROKER_NAMESPACE}-throttle",
        "OPTIONS": {
            "socket_connect_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
            "socket_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
            # Not pickle: what the web process reads from Redis is data, never code.
            "serializer": "publishing.api.throttling.JSONSerializer",
        },
    },
}

REST_FRAMEWORK = {
    # Token first: an anonymous API call then gets 401 with WWW-Authenticate
    # rather than the 403 that session authentication would give.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's three, the JSON one bounded in size and depth (a 400, never a RecursionError's 500).
    "DEFAULT_PARSER_CLASSES": [
        "publishing.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "publishing.api.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "publishing.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "publisher_project.exception_handler.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # DRF's default (None) takes X-Forwarded-For as it comes: any client could pick its own address.
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Publisher API",
    "DESCRIPTION": "Build a project, package an artifact and submit it to a store, as a background job.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PublishingStatusEnum": "publishing.models.Publishing.Status",
        "HealthStateEnum": "publishing.api.serializers.HEALTH_STATES",
    },
}

# --- Logging ----------------------------------------------------------------

LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "job_context": {"()": "publishing.log_context.JobContextFilter"},
        "outage_traceback": {"()": "publishing.log_context.OutageTracebackFilter"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s%(job_context)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["outage_traceback", "job_context"],
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "publishing": {"level": LOG_LEVEL},
        "dramatiq": {"level": "INFO"},
        "django": {"level": "INFO"},
    },
}
