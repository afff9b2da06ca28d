"""An attempt's record and its log, closed once by whoever ends it first."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from publishing.exceptions import StaleAttempt
from publishing.models import Attempt, Publishing

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome


def outcome_of_stopped(publishing_id: uuid.UUID | str) -> str:
    """How an attempt that lost its publishing ended: cancelled, or superseded by another run."""
    status = Publishing.objects.filter(pk=publishing_id).values_list("status", flat=True).first()
    return Outcome.CANCELLED if status == Status.CANCELLED else Outcome.SUPERSEDED


def finish_attempt(
    publishing_id: uuid.UUID | str,
    number: int,
    outcome: str,
    *,
    error_code: str = "",
    error_message: str = "",
    log: AttemptLog | None = None,
) -> None:
    """Close attempt `number` if still running; the first to close it decides how it ended."""
    changes: dict[str, Any] = {
        "outcome": outcome,
        "finished_at": timezone.now(),
        "error_code": error_code,
        "error_message": error_message,
    }
    if log is not None:
        changes["log_excerpt"] = log.excerpt
    Attempt.objects.filter(publishing_id=publishing_id, number=number, outcome=Outcome.RUNNING).update(
        **changes
    )


def cap_log(text: str, limit: int) -> str:
    """Keep the newest `limit` characters of a log, marking the cut."""
    if len(text) <= limit:
        return text
    marker = "[earlier output truncated]\n"
    return marker + text[len(text) - limit + len(marker) :]


class AttemptLog:
    """The publishing's log as this attempt extends it; written to the row at most twice a second."""

    FLUSH_INTERVAL = 0.5

    def __init__(self, publishing: Publishing, attempt: int, message_id: str) -> None:
        self.publishing = publishing
        self.attempt = attempt
        self.message_id = message_id
        self.text = publishing.log
        self.excerpt = ""
        self._dirty = False
        self._last_flush = 0.0

    def append(self, chunk: str) -> None:
        # A build may print NUL (`cat /proc/self/environ`): PostgreSQL's text refuses it.
        chunk = chunk.replace("\x00", "\ufffd")
        self.text = cap_log(self.text + chunk, settings.PUBLISHING_LOG_LIMIT)
        self.excerpt = cap_log(self.excerpt + chunk, settings.PUBLISHING_ATTEMPT_LOG_EXCERPT)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self.flush()

    def step(self, line: str, *, progress: int | None) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.text = cap_log(f"{self.text}[{stamp}] {line}\n", settings.PUBLISHING_LOG_LIMIT)
        self.excerpt = cap_log(f"{self.excerpt}[{stamp}] {line}\n", settings.PUBLISHING_ATTEMPT_LOG_EXCERPT)
        self._dirty = True
        self.flush(progress=progress)

    def flush(self, *, progress: int | None = None) -> None:
        changes: dict[str, Any] = {"log": self.text, "updated_at": timezone.now()}
        if progress is not None:
            changes["progress"] = progress
        if not (self._dirty or progress is not None):
            return
        moved = Publishing.objects.filter(
            pk=self.publishing.pk,
            attempts=self.attempt,
            message_id=self.message_id,
            status__in=(Status.BUILDING, Status.SUBMITTING),
        ).update(**changes)
        self._dirty = False
        self._last_flush = time.monotonic()
        if not moved:
            raise StaleAttempt(f"publishing {self.publishing.pk} no longer belongs to attempt {self.attempt}")
