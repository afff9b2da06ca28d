"""Running one attempt of a publishing: called by the actor, fenced at every write."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db import utils as db_utils
from django.utils import timezone
from dramatiq.middleware.time_limit import TimeLimitExceeded

from publishing import metrics, presence
from publishing.exceptions import (
    InvalidTransition,
    JobError,
    PermanentJobError,
    StaleAttempt,
    TransientJobError,
)
from publishing.models import Attempt, Project, Publishing
from publishing.pipeline import Artifact, Job, Origin, Pipeline, Submission, get_pipeline
from publishing.pipeline.workspace import workspace as pipeline_workspace
from publishing.redaction import redact_credentials
from publishing.services.attempts import AttemptLog, finish_attempt, outcome_of_stopped
from publishing.services.failures import record_failure
from publishing.services.provenance import record_commit

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome


def publishing_run(*, publishing_id: str, message_id: str, retries: int, max_retries: int) -> None:
    """Run one attempt of the pipeline for a publishing. Safe to run more than once for the same id.

    A finished, superseded or missing publishing is logged and skipped. Raises
    TransientJobError when the attempt should be retried and PermanentJobError
    when the publishing failed for good; either way the record says so first.
    """
    publishing = _claim(publishing_id, message_id, retries=retries, max_retries=max_retries)
    if publishing is None:
        return
    logger.info(
        "publishing %s attempt %d started (retry %d of %d)",
        publishing_id,
        publishing.attempts,
        retries,
        max_retries,
    )
    started = time.monotonic()
    log = AttemptLog(publishing, publishing.attempts, message_id)
    try:
        Attempt.objects.create(
            publishing_id=publishing.pk,
            number=log.attempt,
            message_id=message_id,
            worker=presence.worker_name(),
        )
        _run_attempt(publishing, log)
    except StaleAttempt:
        metrics.attempt_finished("stopped")
        finish_attempt(publishing.pk, log.attempt, outcome_of_stopped(publishing.pk), log=log)
        logger.info("publishing %s attempt %d superseded or cancelled; stopped", publishing_id, log.attempt)
        return
    except (Exception, TimeLimitExceeded) as exc:  # TimeLimitExceeded is a BaseException (an interrupt)
        error = _classify(exc, publishing_id=publishing_id, attempt=log.attempt)
        record_failure(publishing, log, error, retries=retries, max_retries=max_retries)
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        # Aborted by a cancellation or cut off by the shutdown deadline: whoever
        # moved the publishing closes the attempt; this only catches the rest.
        with contextlib.suppress(db_utils.Error):
            finish_attempt(publishing.pk, log.attempt, outcome_of_stopped(publishing.pk), log=log)
        raise
    metrics.attempt_finished("published")
    logger.info(
        "publishing %s published by attempt %d in %.1fs",
        publishing_id,
        log.attempt,
        time.monotonic() - started,
    )


def _claim(publishing_id: str, message_id: str, *, retries: int, max_retries: int) -> Publishing | None:
    """Take the publishing for this message's next attempt (building), or say why not and return None."""
    publishing = Publishing.objects.select_related("project").filter(pk=publishing_id).first()
    if publishing is None:
        # A ghost: initiate deletes a publishing whose send failed (its only delete), but a send
        # that timed out may have reached the broker all the same. The caller got a 503 and no
        # one waits for it; a dead letter or an ERROR would only page someone for nothing.
        logger.info(
            "message %s for publishing %s, which no longer exists: dropped", message_id, publishing_id
        )
        return None
    if publishing.is_terminal:
        logger.info("publishing %s already %s; message skipped", publishing_id, publishing.status)
        return None
    if publishing.message_id and publishing.message_id != message_id:
        logger.info(
            "publishing %s belongs to message %s; stale message skipped", publishing_id, publishing.message_id
        )
        return None
    if publishing.status in (Status.BUILDING, Status.SUBMITTING):
        if not _resume(publishing):
            return None
    elif publishing.status != Status.QUEUED:
        logger.warning("publishing %s is %s, not queued; message skipped", publishing_id, publishing.status)
        return None
    attempt = publishing.attempts + 1
    worker = presence.worker_name()
    try:
        Publishing.objects.transition(
            publishing.pk,
            Status.BUILDING,
            attempt=publishing.attempts,
            message_id=message_id,
            attempts=attempt,
            retries=retries,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            not_before=None,
            wait_reason="",
            worker=worker,
            progress=5,
            error_code="",
            error_message="",
            event=f"attempt {attempt} started on {worker}"
            + (f" (retry {retries} of {max_retries})" if retries else ""),
        )
    except InvalidTransition:
        logger.info("publishing %s was taken or cancelled before it started; skipped", publishing_id)
        return None
    publishing.attempts = attempt
    return publishing


def _resume(publishing: Publishing) -> bool:
    """A running publishing's message came again: True if its last attempt is lost and it is queued anew.

    False for a duplicate delivery while the attempt still holds its lease elsewhere, or when the
    publishing changed meanwhile.
    """
    lease_expired = timezone.now() - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT)
    if publishing.heartbeat_at and publishing.heartbeat_at > lease_expired:
        logger.info(
            "publishing %s is running elsewhere (lease held); duplicate message skipped", publishing.pk
        )
        return False
    # A redelivery: the worker that ran the last attempt died mid-way.
    logger.warning(
        "publishing %s was %s when its message came back; its last attempt was lost, starting again",
        publishing.pk,
        publishing.status,
    )
    try:
        Publishing.objects.transition(
            publishing.pk,
            Status.QUEUED,
            attempt=publishing.attempts,
            # Still as read above: a cancel meanwhile keeps the attempt number, and cancelled ->
            # queued is a retry's move, which would run a cancelled publishing (test_runner_failures).
            only_from=(Status.BUILDING, Status.SUBMITTING),
            error_message="Previous attempt lost.",
            event=f"attempt {publishing.attempts} stopped: its worker stopped mid-way",
        )
    except InvalidTransition:
        logger.info("publishing %s changed while being resumed; message skipped", publishing.pk)
        return False
    finish_attempt(
        publishing.pk, publishing.attempts, Outcome.LOST, error_message="Its worker stopped mid-way."
    )
    return True


def _classify(exc: BaseException, *, publishing_id: str, attempt: int) -> JobError:
    """What an attempt's exception means for the publishing: retried (transient) or failed for good."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, (db_utils.OperationalError, db_utils.InterfaceError)):
        return TransientJobError(f"Database unavailable: {exc}", code="DATABASE_UNAVAILABLE")
    if isinstance(exc, TimeLimitExceeded):
        return PermanentJobError("The job exceeded its time limit.", code="TIME_LIMIT_EXCEEDED")
    logger.error("publishing %s attempt %d crashed", publishing_id, attempt, exc_info=exc)
    return PermanentJobError(f"Internal error: {type(exc).__name__}", code="INTERNAL_ERROR")


def _run_attempt(publishing: Publishing, log: AttemptLog) -> None:
    project = publishing.project
    if project is None:
        raise PermanentJobError("The project was deleted.", code="PROJECT_DELETED")
    pipeline = get_pipeline()
    published = False
    try:
        with pipeline_workspace() as workspace:
            job = _job_of(publishing, project, workspace, log)
            artifact, submission = _run_steps(pipeline, publishing, job, log)
            # Before the workspace goes: removing a large checkout takes seconds that nobody waits for.
            _record_published(publishing, log, artifact, submission)
            published = True
    except BaseException as exc:
        if not published:
            raise
        # Published and recorded: an interrupt as the workspace goes (the time limit, a shutdown)
        # changes nothing of that, and the next sweep removes what is left of the folder.
        logger.warning(
            "publishing %s published; the removal of its workspace was cut short (%r)", publishing.pk, exc
        )


def _run_steps(
    pipeline: Pipeline, publishing: Publishing, job: Job, log: AttemptLog
) -> tuple[Artifact, Submission]:
    """Checkout, build, package, submit; each step in the log, the submit fenced."""
    try:
        log.step("checkout", f"checkout {redact_credentials(job.repository_url)}@{job.ref}", progress=10)
        with metrics.step("checkout"):
            checked_out = pipeline.checkout(job)
        source = checked_out.path
        record_commit(publishing, log, checked_out.commit)
        # From here on the job names the commit it builds, whatever it asked for.
        job = replace(job, commit=checked_out.commit.sha)
        command = job.build_command.strip()
        log.step("build", f"build: {command}" if command else "build: no build command", progress=30)
        with metrics.step("build"):
            pipeline.build(job, source)
        log.step("package", f"package {job.artifact_path}", progress=60)
        with metrics.step("package"):
            artifact = replace(pipeline.package(job, source), commit=checked_out.commit)
        log.event(f"artifact sha256={artifact.sha256} size={artifact.size}")
        log.end_step()
        log.flush()
        # The fence: only the attempt that still owns the publishing may submit.
        _move(
            publishing,
            Status.SUBMITTING,
            attempt=log.attempt,
            message_id=log.message_id,
            progress=75,
            artifact_sha256=artifact.sha256,
            artifact_size=artifact.size,
        )
        log.step("submit", f"submit to {redact_credentials(job.target_url)}", progress=None)
        with metrics.step("submit"):
            submission = pipeline.submit(job, artifact)
        log.end_step()
    except BaseException:
        log.end_step("stopped")
        raise
    finally:
        log.flush()
    return artifact, submission


def _record_published(
    publishing: Publishing, log: AttemptLog, artifact: Artifact, submission: Submission
) -> None:
    """The publishing published and its attempt closed, in one transaction: no reader sees one
    without the other."""
    with transaction.atomic():
        _move(
            publishing,
            Status.PUBLISHED,
            attempt=log.attempt,
            message_id=log.message_id,
            progress=100,
            artifact_uri=submission.uri,
            submission_ref=submission.ref,
            event=f"published to {submission.uri} (sha256 {artifact.sha256}, {artifact.size} bytes)",
        )
        finish_attempt(publishing.pk, log.attempt, Outcome.PUBLISHED, log=log)


def _job_of(publishing: Publishing, project: Project, workspace: Path, log: AttemptLog) -> Job:
    """What the pipeline is given: the settings of the publishing, copied from the project at initiate."""
    return Job(
        publishing_id=str(publishing.pk),
        origin=Origin(owner_id=str(project.owner_id), project_id=str(project.pk), project_slug=project.slug),
        repository_url=publishing.repository_url,
        ref=publishing.ref,
        build_command=publishing.build_command,
        artifact_path=publishing.artifact_path,
        target_url=publishing.target_url,
        workspace=workspace,
        log=log.append,
        # Once an attempt has checked a commit out, the next ones build that commit, not a newer head
        # of the ref: one publishing is one commit, whatever its retries.
        commit=publishing.requested_commit or publishing.commit_sha,
        attempt=log.attempt,
    )


def _move(publishing: Publishing, to: str, *, attempt: int, message_id: str, **changes: Any) -> None:
    try:
        Publishing.objects.transition(publishing.pk, to, attempt=attempt, message_id=message_id, **changes)
    except InvalidTransition as exc:
        raise StaleAttempt(str(exc)) from exc
