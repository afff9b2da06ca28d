"""Developer machine: DEBUG on, SQLite in var/, local sources and targets allowed."""

from .base import *  # noqa: F403
from .base import SECRET_KEY

DEBUG = True
SECRET_KEY = SECRET_KEY or "local-development-only-not-secret"

PUBLISHING_ALLOW_LOCAL_SOURCES = True
PUBLISHING_ALLOW_PRIVATE_TARGETS = True
PUBLISHING_ALLOW_USER_BUILD_COMMANDS = True
