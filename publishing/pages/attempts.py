"""A publishing's attempts as the page shows them: each with its steps' states and times, newest first.

Pure, over the Attempt rows and the step records AttemptLog writes on them (`Attempt.steps`): no
reading of the log's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from publishing.models import Attempt, LogLine, Publishing
from publishing.pages.clocks import Timing, iso, took
from publishing.redaction import redact_credentials

Status = Publishing.Status
Outcome = Attempt.Outcome

STEP_NAMES: tuple[str, ...] = (
    LogLine.Step.CHECKOUT,
    LogLine.Step.BUILD,
    LogLine.Step.PACKAGE,
    LogLine.Step.SUBMIT,
)
# The outcome of the attempt a queued publishing waits for: it has no row yet.
WAITING = "waiting"
# Outcomes after which a step that did not end well was stopped from outside, not failed.
STOPPED_FROM_OUTSIDE = frozenset({Outcome.CANCELLED, Outcome.SUPERSEDED})
OUTCOME_WORDS = {
    WAITING: "waiting to start",
    Outcome.RUNNING: "running",
    Outcome.PUBLISHED: "published",
    Outcome.RETRYING: "failed, retried",
    Outcome.FAILED: "failed",
    Outcome.CANCELLED: "cancelled",
    Outcome.LOST: "lost: its worker stopped",
    Outcome.SUPERSEDED: "superseded by a newer run",
}


@dataclass(frozen=True)
class StepView:
    """One step of one attempt: pending, running, done, failed, cancelled or skipped."""

    name: str
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def took(self) -> Timing:
        return took(self.started_at, self.finished_at) if self.state != "pending" else Timing("")

    @property
    def window(self) -> tuple[str, str]:
        """When it started and ended, as the page's script reads them to give each event its step."""
        return (
            iso(self.started_at) if self.started_at else "",
            iso(self.finished_at) if self.finished_at else "",
        )


@dataclass(frozen=True)
class AttemptView:
    """One attempt (or the one a queued publishing waits for) and its steps."""

    number: int
    outcome: str
    steps: list[StepView]
    worker: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_code: str = ""
    error_message: str = ""
    commit_sha: str = ""

    @property
    def running(self) -> bool:
        return self.outcome in (Outcome.RUNNING, WAITING)

    @property
    def took(self) -> Timing:
        return took(self.started_at, self.finished_at)

    @property
    def outcome_text(self) -> str:
        return OUTCOME_WORDS.get(self.outcome, self.outcome)

    @property
    def stopped_step(self) -> StepView | None:
        """The step it failed or was cancelled at, if any."""
        return next((step for step in self.steps if step.state in ("failed", "cancelled")), None)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def step_views(
    recorded: list[dict[str, Any]], outcome: str, ended_at: datetime | None = None
) -> list[StepView]:
    """The four steps of an attempt that ended `outcome` at `ended_at` (or runs), from its step records.

    A step cut off without its end recorded (cancelled, its worker gone) ended with its attempt.
    """
    by_name = {record.get("name"): record for record in recorded if isinstance(record, dict)}
    views = []
    for name in STEP_NAMES:
        record = by_name.get(name)
        if record is None:
            running = outcome in (Outcome.RUNNING, WAITING)
            views.append(StepView(name, "pending" if running else "skipped"))
            continue
        if record.get("state") == "done":
            state = "done"
        elif record.get("state") == "running" and outcome == Outcome.RUNNING:
            state = "running"
        else:
            # Stopped, or still marked running by an attempt that ended without saying so (its worker died).
            state = "cancelled" if outcome in STOPPED_FROM_OUTSIDE else "failed"
        finished = _time(record.get("finished_at")) or (ended_at if state != "running" else None)
        views.append(StepView(name, state, _time(record.get("started_at")), finished))
    return views


def _of_row(attempt: Attempt) -> AttemptView:
    return AttemptView(
        number=attempt.number,
        outcome=attempt.outcome,
        steps=step_views(attempt.steps or [], attempt.outcome, attempt.finished_at),
        worker=attempt.worker,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        error_code=attempt.error_code,
        error_message=redact_credentials(attempt.error_message),
        commit_sha=attempt.commit_sha,
    )


def attempt_views(publishing: Publishing, attempts: list[Attempt]) -> list[AttemptView]:
    """Its attempts, newest first; first of all the one it waits for when queued (or never ran)."""
    views = [_of_row(attempt) for attempt in attempts]
    numbers = {attempt.number for attempt in attempts}
    running = publishing.status in (Status.BUILDING, Status.SUBMITTING)
    if running and publishing.attempts not in numbers:
        # Claimed, its row not written yet: the attempt runs all the same.
        views.append(
            AttemptView(
                publishing.attempts,
                Outcome.RUNNING,
                step_views([], Outcome.RUNNING),
                worker=publishing.worker,
                started_at=publishing.started_at,
            )
        )
    elif publishing.status in (Status.PENDING, Status.QUEUED) or not views:
        outcome = WAITING if not publishing.is_terminal else publishing.status
        views.append(
            AttemptView(
                publishing.attempts + 1,
                outcome,
                step_views([], outcome),
                error_code=publishing.error_code if publishing.is_terminal else "",
                error_message=redact_credentials(publishing.error_message) if publishing.is_terminal else "",
            )
        )
    return sorted(views, key=lambda view: view.number, reverse=True)
