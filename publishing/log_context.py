"""Job ids on every log line written while a job runs (structured logs: every line of a job names it).

`job_context(...)` binds ids to the current thread of execution; every record
created inside it, by any logger (ours, dramatiq's, Django's), carries them as
attributes, and the `JobContextFilter` renders them as a ` key=value` suffix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

JOB_FIELDS = ("job_id", "message_id", "publishing_id", "project_id", "user_id")

_job_context: ContextVar[dict[str, str] | None] = ContextVar("publishing_job_context", default=None)


@contextmanager
def job_context(**ids: str) -> Iterator[None]:
    """Attach `ids` to every record logged in this context until the block exits."""
    token = _job_context.set({**(_job_context.get() or {}), **ids})
    try:
        yield
    finally:
        _job_context.reset(token)


def _render(record: logging.LogRecord) -> str:
    pairs = [f"{field}={getattr(record, field)}" for field in JOB_FIELDS if hasattr(record, field)]
    return (" " + " ".join(pairs)) if pairs else ""


_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    for field, value in (_job_context.get() or {}).items():
        setattr(record, field, value)
    return record


if getattr(logging.getLogRecordFactory(), "__module__", "") != __name__:
    logging.setLogRecordFactory(_record_factory)


class JobContextFilter(logging.Filter):
    """Renders the record's job ids (from the context or `extra=`) as `record.job_context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_context = _render(record)
        return True


def outage_errors() -> tuple[type[BaseException], ...]:
    """What a connection to the database or the broker raises while that service is away or restarts."""
    # Imported here: logging is configured while Django loads, before the broker may be imported.
    from django.db.utils import InterfaceError, OperationalError

    from publishing.broker import BROKER_ERRORS
    from publishing.exceptions import BrokerUnavailable

    return (*BROKER_ERRORS, BrokerUnavailable, OperationalError, InterfaceError)


# Loggers of libraries that log a whole traceback when Redis or the database is briefly away (the
# abort watcher's loop, Dramatiq's consumer): an outage is expected to pass, and a page of frames for
# each second of it buries what else happened. Our own code logs outages in one line where it meets them.
_LIBRARY_LOGGERS = ("dramatiq_abort", "dramatiq")


class OutageTracebackFilter(logging.Filter):
    """Turns a library's traceback of a connection error into one line: `<message>: <type>: <error>`."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not record.name.startswith(_LIBRARY_LOGGERS):
            return True
        if isinstance(exc, outage_errors()):
            record.msg = f"{record.getMessage()}: {type(exc).__module__}.{type(exc).__qualname__}: {exc}"
            record.args = None
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
