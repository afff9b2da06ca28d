"""Developer machine: DEBUG on, SQLite in var/, local sources and targets allowed.

Every command under these settings finds the broker of a running `make run` (runlocal's record in
VAR_DIR) unless BROKER_URL or REDIS_URL says otherwise, and runs no worker metrics port unless asked.
"""

from publisher_project.runlocal_record import current_record

from .core import VAR_DIR as _VAR_DIR
from .validation import default_unless_set

# Given before the concern modules read the environment (base, below), so that every value derived
# from these (REDIS_URL's users, DRAMATIQ_BROKER's url and middleware) agrees.
default_unless_set({"WORKER_METRICS_PORT": "0"})
_running = current_record(_VAR_DIR)
if _running is not None:
    default_unless_set({"BROKER_URL": _running.broker_url, "REDIS_URL": _running.redis_url})

from .base import *  # noqa: E402, F403
from .base import (  # noqa: E402
    LOGGING,
    PUBLISHING_BUILD_SANDBOX,
    PUBLISHING_BUILD_USER,
    PUBLISHING_FILE_STORE_ROOTS,
    SECRET_KEY,
    VAR_DIR,
)

DEBUG = True
SECRET_KEY = SECRET_KEY or "local-development-only-not-secret"

PUBLISHING_ALLOW_LOCAL_SOURCES = True
PUBLISHING_ALLOW_PRIVATE_TARGETS = True
PUBLISHING_ALLOW_USER_BUILD_COMMANDS = True
# The demo project's store (make run) is var/store.
PUBLISHING_FILE_STORE_ROOTS = PUBLISHING_FILE_STORE_ROOTS or [str(VAR_DIR / "store")]
# A developer's machine may well run everything as root: builds then run as root, knowingly.
PUBLISHING_BUILD_USER = PUBLISHING_BUILD_USER or "worker"
# Sandboxed where bwrap is installed; otherwise the worker says loudly at start that it is not.
PUBLISHING_BUILD_SANDBOX = PUBLISHING_BUILD_SANDBOX or "auto"

# The live pages poll every few seconds: their successful polls would bury everything else in the
# web server's request log. Errors, and every other request, stay.
LOGGING = {
    **LOGGING,
    "filters": {**LOGGING["filters"], "live_polls": {"()": "publishing.live_polls.LivePollsFilter"}},
    # Django's own format for the request log (DEFAULT_LOGGING's), which this logger's handler replaces.
    "formatters": {
        **LOGGING["formatters"],
        "requests": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        **LOGGING["handlers"],
        "requests": {"class": "logging.StreamHandler", "formatter": "requests", "filters": ["live_polls"]},
    },
    "loggers": {
        **LOGGING["loggers"],
        "django.server": {"handlers": ["requests"], "level": "INFO", "propagate": False},
    },
}
