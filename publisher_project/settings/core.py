"""Django itself: hosts, apps, middleware, templates, the database, static files and logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

from .validation import read_bool, read_int, read_list, read_str

__all__ = [
    "ALLOWED_HOSTS",
    "ASGI_APPLICATION",
    "AUTH_PASSWORD_VALIDATORS",
    "BASE_DIR",
    "CSRF_FAILURE_VIEW",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASES",
    "DATABASE_CONN_MAX_AGE",
    "DATABASE_URL",
    "DEBUG",
    "DEFAULT_AUTO_FIELD",
    "FORMAT_MODULE_PATH",
    "INSTALLED_APPS",
    "LANGUAGE_CODE",
    "LOGGING",
    "LOGIN_REDIRECT_URL",
    "LOGIN_URL",
    "LOG_LEVEL",
    "MIDDLEWARE",
    "PRODUCTION",
    "ROOT_URLCONF",
    "SECRET_KEY",
    "SECURE_SSL_REDIRECT_IN_PRODUCTION",
    "STATIC_ROOT",
    "STATIC_URL",
    "TEMPLATES",
    "TIME_ZONE",
    "USE_I18N",
    "USE_TZ",
    "VAR_DIR",
    "WSGI_APPLICATION",
]

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Local state: the SQLite database, the embedded Redis, the demo store, the worker metrics files.
VAR_DIR = Path(read_str("VAR_DIR", str(BASE_DIR / "var")))

# True in production.py, and so in every settings module built on it: the commands for a developer's
# machine (bootstrap_demo with its demo/publish-me superuser, runlocal) refuse to run there.
PRODUCTION = False

# Django's secret key; production.py refuses to start without one.
SECRET_KEY: str = read_str("SECRET_KEY", "")
# Django's debug mode (on in local.py).
DEBUG: bool = read_bool("DEBUG", False)
# The host names this service answers to, comma-separated.
ALLOWED_HOSTS: list[str] = read_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
# Origins (https://host) whose unsafe requests pass the CSRF check, comma-separated.
CSRF_TRUSTED_ORIGINS: list[str] = read_list("CSRF_TRUSTED_ORIGINS", [])
# Read here, applied by production.py only (off behind a TLS-terminating proxy
# that already redirects).
SECURE_SSL_REDIRECT_IN_PRODUCTION: bool = read_bool("SECURE_SSL_REDIRECT", True)

INSTALLED_APPS = [
    # Django's admin app, its default site Publisher's (named, and listing the queue overview).
    "publishing.admin_site.PublisherAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Before django_dramatiq: our rundramatiq (shutdown timeout from settings) wins.
    "publishing",
    # Builds the broker from DRAMATIQ_BROKER when Django loads; its Task admin is unregistered
    # (publishing/admin/__init__.py) and its table no longer written.
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


def _database(url: str, conn_max_age: int) -> dict[str, Any]:
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
        config["CONN_MAX_AGE"] = conn_max_age
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
DATABASE_CONN_MAX_AGE: int = read_int("DATABASE_CONN_MAX_AGE", 60)
# The database, as a URL (postgres://user:pass@host:5432/db or sqlite:///path).
DATABASE_URL: str = read_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'publisher.sqlite3'}")
DATABASES = {"default": _database(DATABASE_URL, DATABASE_CONN_MAX_AGE)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# Times to the second (publisher_project/formats/en/formats.py).
FORMAT_MODULE_PATH = ["publisher_project.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Outside VAR_DIR in the image (STATIC_ROOT=/app/static), so that a volume on var/ cannot hide it.
STATIC_ROOT = Path(read_str("STATIC_ROOT", str(VAR_DIR / "static")))

LOGIN_URL = "/api-auth/login/"
LOGIN_REDIRECT_URL = "/projects/"

# The level of the `publishing` loggers.
LOG_LEVEL: str = read_str(
    "LOG_LEVEL", "INFO", choices=("debug", "info", "warning", "error", "critical")
).upper()
LOGGING: dict[str, Any] = {
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
