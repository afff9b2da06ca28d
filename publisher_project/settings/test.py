"""Unit tests: the in-memory stub broker, fast hashing, short backoffs."""

import os
import tempfile

from .base import *  # noqa: F403
from .base import (
    DATABASES,
    DRAMATIQ_BROKER,
    PUBLISHING_BUILD_SANDBOX,
    PUBLISHING_BUILD_USER,
    PUBLISHING_FILE_STORE_ROOTS,
    VAR_DIR,
)

SECRET_KEY = "test-only-not-secret"  # noqa: S105
DEBUG = False

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

BROKER_URL = "stub://"
DRAMATIQ_BROKER = {**DRAMATIQ_BROKER, "OPTIONS": {**DRAMATIQ_BROKER["OPTIONS"], "url": BROKER_URL}}

PUBLISHING_MIN_BACKOFF_MS = 10
PUBLISHING_MAX_BACKOFF_MS = 50
PUBLISHING_WEBHOOK_MIN_BACKOFF_MS = 10
PUBLISHING_WEBHOOK_MAX_BACKOFF_MS = 50
PUBLISHING_ALLOW_LOCAL_SOURCES = True
PUBLISHING_ALLOW_PRIVATE_TARGETS = True
PUBLISHING_ALLOW_USER_BUILD_COMMANDS = False
# Tests keep their stores in their temporary folders.
PUBLISHING_FILE_STORE_ROOTS = PUBLISHING_FILE_STORE_ROOTS or [str(VAR_DIR / "store"), tempfile.gettempdir()]
# As on a developer's machine: sandboxed where bwrap is installed (CI installs it).
PUBLISHING_BUILD_SANDBOX = PUBLISHING_BUILD_SANDBOX or "auto"
# CI machines run as root; tests of the build user set it themselves.
PUBLISHING_BUILD_USER = PUBLISHING_BUILD_USER or "worker"

# No Redis in unit tests: per-process memory. The initiate throttle is off unless a test turns it
# on: the suite initiates far more than 60 times a minute, and user ids repeat across tests.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"},
}
PUBLISHING_INITIATE_RATE = "0"
# The login throttle likewise: the suite logs in as the same few users many times.
LOGIN_FAILURES_PER_USERNAME = None
LOGIN_FAILURES_PER_ADDRESS = None

# A file, not memory: integration tests share the test database with the web
# and worker processes they start. One per test run, so two runs in one
# checkout do not clobber each other.
DATABASES["default"].setdefault("TEST", {})
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"]["NAME"] = str(VAR_DIR / f"test-publisher-{os.getpid()}.sqlite3")
# Threads the tests start (stub-broker workers, concurrent requests) would each keep a connection
# to the test database, which pytest-django drops at the end; the processes the integration
# tests start use their own settings, with persistent connections.
DATABASES["default"]["CONN_MAX_AGE"] = 0
