"""Developer machine: DEBUG on, SQLite in var/, local sources and targets allowed."""

from .base import *  # noqa: F403
from .base import (
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
