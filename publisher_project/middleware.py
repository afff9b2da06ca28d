"""Web-tier middleware: a database that cannot be reached is a 503 the client can retry, not a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from publisher_project.errors import error_response

logger = logging.getLogger(__name__)

# What a lost or refused connection raises (PostgreSQL restarting, SQLite locked past its timeout);
# a bad query raises ProgrammingError or DataError, which stay bugs (500).
DATABASE_UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = "5"


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 `SERVICE_UNAVAILABLE` with Retry-After: JSON under /api/, a line of text elsewhere."""
    headers = {"Retry-After": RETRY_AFTER_SECONDS}
    if request.path.startswith("/api/"):
        return error_response("SERVICE_UNAVAILABLE", "Database unavailable", status=503, headers=headers)
    text = "Service unavailable: the database cannot be reached. Try again in a few seconds.\n"
    return HttpResponse(text, status=503, content_type="text/plain; charset=utf-8", headers=headers)


class DatabaseUnavailableMiddleware:
    """Turns a database connection error raised by a view into `database_unavailable`.

    Errors raised outside views (a session saved by its middleware) reach `handler500`, which
    answers the same for them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_UNAVAILABLE_ERRORS):
            return None
        logger.warning("Database unavailable for %s %s: %s", request.method, request.path, exception)
        return database_unavailable(request)
