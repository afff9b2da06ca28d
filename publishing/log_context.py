"""Job ids on every log line written while a job runs (SPEC §4, structured logs).

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
