"""An attempt's record and its log, closed once by whoever ends it first."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from publishing.exceptions import StaleAttempt
from publishing.models import Attempt, LogLine, Publishing
from publishing.selectors import render_line
from publishing.services.log import TRIM_TO, store

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
        changes["steps"] = log.steps
    Attempt.objects.filter(publishing_id=publishing_id, number=number, outcome=Outcome.RUNNING).update(
        **changes
    )


def cap_log(text: str, limit: int) -> str:
    """Keep the newest `limit` characters of a text, marking the cut."""
    if len(text) <= limit:
        return text
    marker = "[earlier output truncated]\n"
    return marker + text[len(text) - limit + len(marker) :]


class LineBuffer:
    """A command's output, as it comes in chunks, cut into lines; an unfinished line waits for its end."""

    def __init__(self) -> None:
        self._pending = ""
        self._since = 0.0

    def feed(self, chunk: str) -> list[str]:
        """The lines `chunk` finishes."""
        if not self._pending:
            self._since = time.monotonic()
        *done, self._pending = (self._pending + chunk.replace("\r\n", "\n")).split("\n")
        return [_last_redraw(line) for line in done]

    def waited(self, seconds: float) -> bool:
        """Whether an unfinished line has waited `seconds` for its end (a prompt, a progress bar)."""
        return bool(self._pending) and time.monotonic() - self._since >= seconds

    def drain(self) -> list[str]:
        """The unfinished line, as it is."""
        pending, self._pending = self._pending, ""
        return [_last_redraw(pending)] if pending else []


def _last_redraw(line: str) -> str:
    # A progress bar redraws its line after each \r: what a terminal would end up showing is the last.
    return next((part for part in reversed(line.split("\r")) if part), "")


class AttemptLog:
    """What one attempt adds to its publishing's log, written at most twice a second, fenced.

    `append` takes the current step's command output, `event` what Publisher does; `step` starts the
    next step. Every write holds the attempt's fence: once the publishing belongs to another run (or is
    cancelled), the next write raises StaleAttempt and this attempt records nothing more.

    `steps` records each step as it runs (name, state, started_at, finished_at), written to the
    Attempt with the next flush. A step's start and end are the times of the events that say so, and
    no two steps share an instant: an event belongs to the step whose times hold its own.
    """

    FLUSH_INTERVAL = 0.5
    # An unfinished line is written as it stands after this long (a prompt, a progress line).
    PARTIAL_LINE_WAIT = 2.0

    def __init__(self, publishing: Publishing, attempt: int, message_id: str) -> None:
        self.publishing = publishing
        self.attempt = attempt
        self.message_id = message_id
        self.excerpt = ""
        self.current_step = LogLine.Step.EVENT
        self._step_started = time.monotonic()
        self._lines: list[LogLine] = []
        self._output = LineBuffer()
        # The log's size as this attempt counts it: whether to trim, without asking the row each time.
        self._size = publishing.log_size
        self._last_flush = 0.0
        self.steps: list[dict[str, Any]] = []
        self._steps_changed = False

    def append(self, chunk: str) -> None:
        """Output of the current step's command."""
        for text in self._output.feed(chunk):
            self._add(self.current_step, LogLine.Stream.OUTPUT, text)
        if time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self.flush()

    def event(self, text: str) -> None:
        """What Publisher did, written with the next flush."""
        self._add(LogLine.Step.EVENT, LogLine.Stream.PUBLISHER, text)

    def step(self, step: str, text: str, *, progress: int | None) -> None:
        """End the current step (saying how long it took), and start `step` with the event `text`."""
        self.end_step()
        self.current_step = LogLine.Step(step)
        self._step_started = time.monotonic()
        at = timezone.now()
        if self.steps and (last := datetime.fromisoformat(self.steps[-1]["finished_at"])) >= at:
            at = last + timedelta(microseconds=1)
        self.steps.append(
            {"name": step, "state": "running", "started_at": at.isoformat(), "finished_at": None}
        )
        self._steps_changed = True
        self._add(LogLine.Step.EVENT, LogLine.Stream.PUBLISHER, text, at=at)
        self.flush(progress=progress)

    def end_step(self, how: str = "done") -> None:
        """Say that the current step ended, `how`, and in how long (nothing between steps)."""
        for text in self._output.drain():
            self._add(self.current_step, LogLine.Stream.OUTPUT, text)
        if self.current_step != LogLine.Step.EVENT:
            at = timezone.now()
            text = f"{self.current_step} {how} in {time.monotonic() - self._step_started:.1f}s"
            self._add(LogLine.Step.EVENT, LogLine.Stream.PUBLISHER, text, at=at)
            self.steps[-1] |= {"state": how, "finished_at": at.isoformat()}
            self._steps_changed = True
            self.current_step = LogLine.Step.EVENT

    def flush(self, *, progress: int | None = None, **changes: Any) -> None:
        """Write what waits, with `progress` and `changes` to the row; StaleAttempt if the fence is lost."""
        if self._output.waited(self.PARTIAL_LINE_WAIT):
            for text in self._output.drain():
                self._add(self.current_step, LogLine.Stream.OUTPUT, text)
        if progress is not None:
            changes["progress"] = progress
        if not (self._lines or changes):
            return
        lines, self._lines = self._lines, []
        self._size += sum(LogLine.size_of(line.text) for line in lines)
        moved = store(
            self.publishing.pk,
            lines,
            fence=Q(
                attempts=self.attempt,
                message_id=self.message_id,
                status__in=(Status.BUILDING, Status.SUBMITTING),
            ),
            changes={**changes, "updated_at": timezone.now()},
            size=self._size,
        )
        self._last_flush = time.monotonic()
        if self._size > settings.PUBLISHING_LOG_LIMIT:
            self._size = int(settings.PUBLISHING_LOG_LIMIT * TRIM_TO)
        if not moved:
            raise StaleAttempt(f"publishing {self.publishing.pk} no longer belongs to attempt {self.attempt}")
        if self._steps_changed:
            Attempt.objects.filter(publishing_id=self.publishing.pk, number=self.attempt).update(
                steps=self.steps
            )
            self._steps_changed = False

    def _add(self, step: str, stream: str, text: str, *, at: datetime | None = None) -> None:
        now = at or timezone.now()
        for part in LogLine.pieces(text):
            self._lines.append(
                LogLine(
                    publishing_id=self.publishing.pk,
                    attempt=self.attempt,
                    time=now,
                    step=step,
                    stream=stream,
                    text=part,
                )
            )
            self.excerpt = cap_log(
                self.excerpt + render_line(now, step, part), settings.PUBLISHING_ATTEMPT_LOG_EXCERPT
            )
