"""Log records: a library's traceback of an outage is folded into one line; anything else keeps its own."""

from __future__ import annotations

import logging
import sys

import pytest
import redis
from django.db import OperationalError, ProgrammingError

from publishing.log_context import OutageTracebackFilter
from publishing.worker.background import guarded


def record_of(logger: str, level: int, error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        exc_info = sys.exc_info()
    return logging.getLogger(logger).makeRecord(
        logger, level, __file__, 1, "Unhandled error while running the %s.", ("abort watcher",), exc_info
    )


@pytest.mark.parametrize(
    "error",
    [redis.exceptions.ConnectionError("Connection refused."), OperationalError("the connection is closed")],
    ids=["redis", "database"],
)
def test_a_library_traceback_of_an_outage_becomes_one_warning_line(error: Exception) -> None:
    # Given the abort watcher of dramatiq-abort logging an outage with logger.exception
    record = record_of("dramatiq_abort.middleware.Abortable", logging.ERROR, error)

    # When the console handler's filter sees it
    assert OutageTracebackFilter().filter(record)

    # Then it is one WARNING line that names the error, and no traceback
    formatted = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert formatted == (
        f"WARNING Unhandled error while running the abort watcher.: "
        f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    )


def test_a_library_traceback_of_a_bug_and_our_own_tracebacks_are_kept() -> None:
    # Given a library's traceback that is not an outage, and one of ours that is
    bug = record_of("dramatiq.worker.WorkerThread", logging.ERROR, ProgrammingError("no such column"))
    ours = record_of("publishing.worker", logging.ERROR, redis.exceptions.ConnectionError("refused"))

    # When the filter sees them
    assert OutageTracebackFilter().filter(bug)
    assert OutageTracebackFilter().filter(ours)

    # Then both keep their level and their traceback (our code logs its outages in one line itself)
    for record in (bug, ours):
        assert record.levelno == logging.ERROR
        assert "Traceback (most recent call last)" in logging.Formatter().format(record)


# A pass ends with close_old_connections(), which asks the connection a previous test of this process left
# open whether it still works (with PostgreSQL; SQLite's is closed in between).
@pytest.mark.django_db
def test_a_lifecycle_pass_that_meets_an_outage_logs_one_line_and_a_bug_its_traceback(caplog) -> None:
    def database_away() -> None:
        raise OperationalError("connection refused")

    def bug() -> None:
        raise KeyError("publishing")

    # When the worker's heartbeat or reconcile pass meets each
    with caplog.at_level(logging.WARNING, logger="publishing"):
        guarded(database_away)
        guarded(bug)

    # Then the outage is one WARNING naming the pass and the error, and the bug an ERROR with its traceback
    assert [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records] == [
        (
            "WARNING",
            "lifecycle task test_a_lifecycle_pass_that_meets_an_outage_logs_one_line_and_a_bug_its_traceback."
            "<locals>.database_away: OperationalError (connection refused); trying again",
            False,
        ),
        (
            "ERROR",
            "lifecycle task test_a_lifecycle_pass_that_meets_an_outage_logs_one_line_and_a_bug_its_traceback."
            "<locals>.bug failed; trying again",
            True,
        ),
    ]
