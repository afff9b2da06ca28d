"""The runner's failure paths, each made to happen on purpose rather than by a chaos run.

An attempt that loses its fence between steps (cancelled, or requeued to a new message), the database
going away mid-attempt, the time limit, and a failure recorded while the publishing moves on. On the
stub broker with ScriptedPipeline; where two runs of one publishing overlap, their builds are
interleaved at the worst moment with events, never sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from unittest import mock

import dramatiq_abort
import pytest
import redis
from django.contrib.auth.models import User
from django.db import InterfaceError, OperationalError
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.time_limit import TimeLimitExceeded

from publishing import broker, metrics
from publishing.exceptions import JobError, PermanentJobError, TransientJobError
from publishing.models import Attempt, Publishing
from publishing.pipeline.base import Job
from publishing.selectors import log_text
from publishing.services import attempts, maintenance, runner
from publishing.services.maintenance import publishing_reconcile, publishing_requeue
from publishing.services.publishings import publishing_cancel, publishing_initiate, publishing_retry
from publishing.tasks import build_and_submit
from tests.factories import ProjectFactory, PublishingFactory, UserFactory
from tests.fakes import ScriptedPipeline

pytestmark = pytest.mark.django_db(transaction=True)

# The longest one run waits for the other before the test gives up on the interleaving.
WAIT_S = 10.0


def queued(owner: User | None = None) -> Publishing:
    owner = owner or UserFactory.create()
    return publishing_initiate(user=owner, project_id=ProjectFactory.create(owner=owner).pk)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The records logged with a traceback: an outage must not produce one (it is expected to pass)."""
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]


def history(publishing: Publishing) -> list[tuple[int, str, str]]:
    return [(a.number, a.outcome, a.error_code) for a in Attempt.objects.filter(publishing=publishing)]


def lose_the_abort_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis of the abort signal is away: only the fence can stop the running attempt."""

    def refused(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.ConnectionError("refused")

    monkeypatch.setattr(dramatiq_abort, "abort", refused)


def cancel(publishing_id: str) -> None:
    """The owner cancels the publishing."""
    publishing = Publishing.objects.select_related("project__owner").get(pk=publishing_id)
    assert publishing.project is not None
    publishing_cancel(publishing=publishing, by=publishing.project.owner)


def requeue(publishing_id: str) -> None:
    """What the reconciler does to an attempt whose lease ran out: a new message, the attempt closed lost."""
    assert publishing_requeue(
        publishing_id=publishing_id, reason="Its worker stopped answering; requeued.", retries=0
    )


def requeue_without_closing_the_attempt(publishing_id: str) -> None:
    """A requeue whose process died between its two writes: a new message, the attempt row still running."""
    with mock.patch.object(maintenance, "finish_attempt"):
        requeue(publishing_id)


class Interleaving:
    """Two runs of one publishing, overlapping at the worst moment; set up before the publishing is queued.

    The first run calls `move_on` with the publishing's id: in its build step (`error` None), or while
    it records the failure of its build (`error` raised by the build, the move made when the runner
    has classified it and is about to write it), or, `before_submitting`, once it has written its
    artifact to the log (after which only the move to submitting can stop it). With `second_run`, the
    first run then waits until a second run (the new message) is building, and that one's build waits
    until the first run's message is done. `problems` says which wait timed out, if any; `packaged`
    holds the message of each run that packaged.
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        move_on: Callable[[str], None],
        *,
        error: JobError | None = None,
        second_run: bool = True,
        before_submitting: bool = False,
    ) -> None:
        self.first_message: str | None = None
        self.second_building = threading.Event()
        self.first_done = threading.Event()
        self.problems: list[str] = []
        self.packaged: list[str] = []
        self._running = threading.local()
        self._builds = 0
        self._moved = False
        self._publishing_id = ""
        self._lock = threading.Lock()
        self._move_on = move_on
        self._second_run = second_run
        run, attempt_finished = runner.publishing_run, metrics.attempt_finished
        package, flush = ScriptedPipeline.package, attempts.AttemptLog.flush
        interleaving = self

        def publishing_run(*, message_id: str, **kwargs: Any) -> None:
            with interleaving._lock:
                interleaving.first_message = interleaving.first_message or message_id
            interleaving._running.message_id = message_id
            try:
                run(message_id=message_id, **kwargs)
            finally:
                if message_id == interleaving.first_message:
                    interleaving.first_done.set()

        def build(pipeline: ScriptedPipeline, job: Job, source: Any) -> None:
            job.log("built\n")
            with interleaving._lock:
                interleaving._builds += 1
                first = interleaving._builds == 1
            if not first:
                interleaving.second_building.set()
                if not interleaving.first_done.wait(WAIT_S):
                    interleaving.problems.append("the first run never finished")
                return
            interleaving._publishing_id = job.publishing_id
            if error is not None:
                raise error
            if not before_submitting:
                interleaving._move_on_now()

        def packaging(pipeline: ScriptedPipeline, job: Job, source: Any) -> Any:
            interleaving.packaged.append(interleaving._running.message_id)
            return package(pipeline, job, source)

        def flush_then_move_on(
            log: attempts.AttemptLog, *, progress: int | None = None, **changes: Any
        ) -> None:
            flush(log, progress=progress, **changes)
            if (
                "artifact sha256=" in log.excerpt
                and log.message_id == interleaving.first_message
                and not interleaving._moved
            ):
                interleaving._move_on_now()

        def recording(outcome: str) -> None:
            # Called by the runner once it has decided how the attempt failed, before it writes that.
            if outcome in ("retry", "failed") and not interleaving._moved:
                interleaving._move_on_now()
            attempt_finished(outcome)

        monkeypatch.setattr(runner, "publishing_run", publishing_run)
        monkeypatch.setattr(ScriptedPipeline, "build", build)
        monkeypatch.setattr(ScriptedPipeline, "package", packaging)
        if error is not None:
            monkeypatch.setattr(metrics, "attempt_finished", recording)
        if before_submitting:
            monkeypatch.setattr(attempts.AttemptLog, "flush", flush_then_move_on)

    def _move_on_now(self) -> None:
        self._moved = True
        self._move_on(self._publishing_id)
        if self._second_run and not self.second_building.wait(WAIT_S):
            self.problems.append("the second run never started building")


# --- an attempt that loses its fence between steps ------------------------------------------------


def test_an_attempt_cancelled_between_steps_stops_before_submitting(drain, monkeypatch) -> None:
    # Given a publishing cancelled by its owner while attempt 1 builds, the abort signal lost
    lose_the_abort_signal(monkeypatch)
    packaged: list[int] = []
    package = ScriptedPipeline.package

    def build(pipeline: ScriptedPipeline, job: Job, source: Any) -> None:
        job.log("built\n")
        if ScriptedPipeline.runs == 1:
            cancel(job.publishing_id)

    def packaging(pipeline: ScriptedPipeline, job: Job, source: Any) -> Any:
        packaged.append(ScriptedPipeline.runs)
        return package(pipeline, job, source)

    monkeypatch.setattr(ScriptedPipeline, "build", build)
    monkeypatch.setattr(ScriptedPipeline, "package", packaging)
    owner = UserFactory.create()
    publishing = queued(owner)

    # When the worker runs it
    drain()

    # Then attempt 1 stopped at its next step (it never packaged): nothing submitted, the publishing
    # cancelled as the owner said
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code) == ("cancelled", "CANCELLED")
    assert owner.get_username() in publishing.error_message
    assert history(publishing) == [(1, "cancelled", "")]
    assert packaged == []
    assert ScriptedPipeline.submitted == []
    assert "package" not in log_text(publishing)

    # When the owner retries it (the abort signal's Redis is back)
    broker.breaker.reset()
    publishing_retry(publishing=publishing, by=owner)
    drain()

    # Then it is published by attempt 2, submitted exactly once
    publishing.refresh_from_db()
    assert publishing.status == "published"
    assert history(publishing) == [(1, "cancelled", ""), (2, "published", "")]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    assert packaged == [2]


@pytest.mark.parametrize(
    ("move_on", "first_outcome"),
    [
        # The reconciler closes the attempt it requeues: the first to close an attempt decides.
        (requeue, "lost"),
        # Nobody closed it: the stale run finds itself superseded and says so.
        (requeue_without_closing_the_attempt, "superseded"),
    ],
)
def test_an_attempt_requeued_between_steps_never_submits_beside_the_new_run(
    drain, monkeypatch, move_on: Callable[[str], None], first_outcome: str
) -> None:
    # Given attempt 1 requeued to a new message while it builds, and the new run building too
    interleaving = Interleaving(monkeypatch, move_on)
    publishing = queued()

    # When the worker runs both
    drain()

    # Then the stale run stopped at its next step (it never packaged), and the new one published,
    # submitting exactly once
    assert interleaving.problems == []
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.error_code) == ("published", 2, "")
    assert publishing.message_id != interleaving.first_message
    assert history(publishing) == [(1, first_outcome, ""), (2, "published", "")]
    assert interleaving.packaged == [publishing.message_id]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    assert log_text(publishing).count("published to") == 1


@pytest.mark.parametrize(
    ("move_on", "first_outcome"),
    [(requeue, "lost"), (requeue_without_closing_the_attempt, "superseded")],
)
def test_an_attempt_requeued_after_its_last_log_write_is_stopped_by_the_submit_fence(
    drain, monkeypatch, move_on: Callable[[str], None], first_outcome: str
) -> None:
    # Given attempt 1 requeued to a new message just after it wrote its artifact to the log, with the
    # new run building: no log write comes before its move to submitting, the fence that must stop it
    interleaving = Interleaving(monkeypatch, move_on, before_submitting=True)
    publishing = queued()

    # When the worker runs both
    drain()

    # Then the stale run packaged but never submitted, and the new one published, submitting exactly once
    assert interleaving.problems == []
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.error_code) == ("published", 2, "")
    assert history(publishing) == [(1, first_outcome, ""), (2, "published", "")]
    assert interleaving.packaged == [interleaving.first_message, publishing.message_id]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    assert log_text(publishing).count("published to") == 1


# --- the database goes away mid-attempt -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [OperationalError("server closed the connection unexpectedly"), InterfaceError("connection closed")],
)
def test_a_database_lost_mid_attempt_is_retried_as_database_unavailable(
    drain, monkeypatch, caplog, error: Exception
) -> None:
    # Given a database that drops the connection once, when attempt 1 records its build step
    flush = attempts.AttemptLog.flush
    failures = [error]

    def flaky_flush(log: attempts.AttemptLog, *, progress: int | None = None, **changes: Any) -> None:
        if progress == 30 and failures:
            raise failures.pop()
        flush(log, progress=progress, **changes)

    monkeypatch.setattr(attempts.AttemptLog, "flush", flaky_flush)
    publishing = queued()

    # When the worker runs it
    with caplog.at_level(logging.INFO):
        drain()

    # Then attempt 1 is recorded as a transient DATABASE_UNAVAILABLE, and the retry published it once
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.error_code) == ("published", 2, "")
    assert history(publishing) == [(1, "retrying", "DATABASE_UNAVAILABLE"), (2, "published", "")]
    first = Attempt.objects.get(publishing=publishing, number=1)
    assert first.error_message.startswith("Database unavailable")
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    # An outage is expected to pass: the retry is logged in one line, without a traceback
    assert [r.levelname for r in caplog.records if "will retry" in r.getMessage()] == ["WARNING"]
    assert tracebacks(caplog) == []


def test_a_database_away_when_the_message_arrives_is_retried_in_one_line_without_using_an_attempt(
    drain, monkeypatch, caplog
) -> None:
    # Given a database that refuses the worker's first look at the publishing
    run = runner.publishing_run
    failures = [OperationalError("connection refused")]

    def away_once(**kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        run(**kwargs)

    monkeypatch.setattr(runner, "publishing_run", away_once)
    publishing = queued()

    # When the worker runs it
    with caplog.at_level(logging.INFO):
        drain()

    # Then the message came back and its one attempt published it
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("published", 1)
    assert ScriptedPipeline.submitted == [str(publishing.pk)]
    # And the outage took one WARNING line, not a traceback at ERROR
    away = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in away] == [
        ("WARNING", f"publishing {publishing.pk}: database unavailable (connection refused); will retry")
    ]
    assert tracebacks(caplog) == []


def test_a_failure_that_cannot_be_recorded_leaves_the_publishing_to_the_reconciler(
    drain, monkeypatch, caplog, settings
) -> None:
    # Given attempt 1 failing transiently, and the database gone as the failure is being recorded
    ScriptedPipeline.reset(TransientJobError("store busy", code="TARGET_UNAVAILABLE"))
    transition = Publishing.objects.transition

    def away_for_the_failure(pk: Any, to: str, **kwargs: Any) -> Any:
        if to == "queued" and kwargs.get("error_code") == "TARGET_UNAVAILABLE":
            raise OperationalError("server closed the connection unexpectedly")
        return transition(pk, to, **kwargs)

    monkeypatch.setattr(Publishing.objects, "transition", away_for_the_failure)
    publishing = queued()

    # When the worker runs it (the retried message finds the attempt's lease still held)
    with caplog.at_level(logging.INFO):
        drain()

    # Then the publishing still says it submits (the step that failed): nothing could be written, and
    # nothing ran twice
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("submitting", 1)
    assert ScriptedPipeline.runs == 1
    assert [r.levelname for r in caplog.records if "could not record the failure" in r.getMessage()] == [
        "WARNING"
    ]
    assert tracebacks(caplog) == []

    # And once its lease lapses, the reconciler runs it again to the end
    monkeypatch.undo()
    settings.PUBLISHING_LEASE_TIMEOUT = 0
    assert publishing_reconcile().requeued_lost == 1
    drain()
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts) == ("published", 2)
    assert history(publishing) == [(1, "lost", ""), (2, "published", "")]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


# --- the time limit -----------------------------------------------------------------------------------


def test_an_attempt_past_its_time_limit_fails_without_a_retry(
    drain, stub_broker: StubBroker, monkeypatch
) -> None:
    # Given a build that runs into the actor's time limit (Dramatiq raises it in the worker thread)
    def build(pipeline: ScriptedPipeline, job: Job, source: Any) -> None:
        raise TimeLimitExceeded()

    monkeypatch.setattr(ScriptedPipeline, "build", build)
    publishing = queued()

    # When the worker runs it
    drain()

    # Then it failed for good with TIME_LIMIT_EXCEEDED after one run, and its message was dead-lettered
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.error_code) == (
        "failed",
        1,
        "TIME_LIMIT_EXCEEDED",
    )
    assert publishing.error_message == "The job exceeded its time limit."
    assert history(publishing) == [(1, "failed", "TIME_LIMIT_EXCEEDED")]
    assert ScriptedPipeline.runs == 1
    assert ScriptedPipeline.submitted == []
    assert len(stub_broker.dead_letters) == 1


# --- a failure recorded while the publishing moves on -------------------------------------------------

FAILURES = [
    TransientJobError("store busy", code="TARGET_UNAVAILABLE"),
    PermanentJobError("build failed", code="BUILD_FAILED"),
]


@pytest.mark.parametrize("error", FAILURES, ids=["transient", "permanent"])
def test_a_failure_recorded_as_the_owner_cancels_keeps_the_publishing_cancelled(
    drain, monkeypatch, error: JobError
) -> None:
    # Given attempt 1 whose build fails, and its owner cancelling while the failure is being recorded
    lose_the_abort_signal(monkeypatch)
    interleaving = Interleaving(monkeypatch, cancel, error=error, second_run=False)
    publishing = queued()

    # When the worker runs it (and Retries brings the message back, for a transient error)
    drain()

    # Then the cancel stands: neither the status nor the error nor the attempt's outcome is overwritten,
    # and nothing ran again
    assert interleaving.problems == []
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code, publishing.attempts) == ("cancelled", "CANCELLED", 1)
    assert history(publishing) == [(1, "cancelled", "")]
    assert ScriptedPipeline.runs == 1
    assert ScriptedPipeline.submitted == []


@pytest.mark.parametrize("error", FAILURES, ids=["transient", "permanent"])
def test_a_failure_recorded_as_the_publishing_is_requeued_leaves_the_new_run_alone(
    drain, monkeypatch, error: JobError
) -> None:
    # Given attempt 1 whose build fails, requeued to a new message while the failure is being recorded,
    # with the new run building already
    interleaving = Interleaving(monkeypatch, requeue, error=error)
    publishing = queued()

    # When the worker runs both (and Retries brings the stale message back, for a transient error)
    drain()

    # Then the failure of the stale run changed nothing of the new one, which published exactly once
    assert interleaving.problems == []
    publishing.refresh_from_db()
    assert (publishing.status, publishing.attempts, publishing.error_code) == ("published", 2, "")
    assert history(publishing) == [(1, "lost", ""), (2, "published", "")]
    assert ScriptedPipeline.submitted == [str(publishing.pk)]


# --- a redelivered message resuming a publishing as it is cancelled ------------------------------------


class _CancelsWhenResuming(logging.Filter):
    """Cancels the publishing at the moment the runner says it resumes it after a lost attempt."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg.startswith("publishing %s was %s when its message came back") and isinstance(
            record.args, tuple
        ):
            cancel(str(record.args[0]))
        return True


def test_a_redelivered_message_does_not_revive_a_publishing_cancelled_as_it_resumes(
    drain, monkeypatch
) -> None:
    # Given a publishing whose worker died mid-build (no lease), its message coming back just as the
    # owner cancels it, the abort signal lost
    lose_the_abort_signal(monkeypatch)
    publishing = PublishingFactory.create(building=True, attempts=1)
    Attempt.objects.create(publishing=publishing, number=1, message_id="dead")
    message = build_and_submit.message_with_options(
        kwargs={"publishing_id": str(publishing.pk), "project_id": "p", "user_id": "u"}
    )
    Publishing.objects.filter(pk=publishing.pk).update(message_id=message.message_id)
    runner_log = logging.getLogger("publishing.services.runner")
    cancels = _CancelsWhenResuming()
    runner_log.addFilter(cancels)

    # When the message is processed
    try:
        build_and_submit.broker.enqueue(message)
        drain()
    finally:
        runner_log.removeFilter(cancels)

    # Then the cancel stands: nothing ran, and the attempt of the dead worker is closed as cancelled
    publishing.refresh_from_db()
    assert (publishing.status, publishing.error_code, publishing.attempts) == ("cancelled", "CANCELLED", 1)
    assert history(publishing) == [(1, "cancelled", "")]
    assert ScriptedPipeline.runs == 0
    assert ScriptedPipeline.submitted == []
