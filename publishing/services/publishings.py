"""What a user does to publishings: initiate, cancel, retry and re-run."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import dramatiq
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from publishing import authorization, broker
from publishing.exceptions import (
    BrokerUnavailable,
    Forbidden,
    InvalidTransition,
    JobError,
    NotFound,
    PublishingConflict,
)
from publishing.log_context import job_context
from publishing.models import Attempt, Project, Publishing
from publishing.pipeline.commits import parse_commit
from publishing.selectors import project_for
from publishing.services.attempts import finish_attempt
from publishing.services.queueing import enqueue, message_for, send

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome


def publishing_initiate(
    *,
    user: User,
    project_id: uuid.UUID | str,
    idempotency_key: str | None = None,
    commit: str = "",
    via: str = "api",
) -> Publishing:
    """Record a publishing and queue its job; returns at once. `via` says where the user asked (api,
    admin, cli), in the log.

    `commit` (a full commit id or a tag in the history of the project's ref) publishes that commit
    instead of the ref's head: ValidationError for one that is neither; whether the repository holds
    it is the job's to find out (COMMIT_NOT_FOUND). The same `idempotency_key` from the same user
    returns the same publishing. If the broker cannot take the message, nothing is kept and
    BrokerUnavailable is raised, so the request can simply be retried.
    """
    commit = _parsed_commit(commit)
    if idempotency_key:
        existing = _by_idempotency_key(user, idempotency_key)
        if existing is not None:
            return _replay(existing, project_id, commit)
    project = project_for(user, project_id)
    if project is None:
        raise NotFound("Project not found.")
    if not authorization.may_publish(user, project):
        raise Forbidden(
            "You may see this project but not publish it: that needs the add_publishing permission."
        )
    broker.ensure_available()
    at = f" at {commit}" if commit else ""
    publishing, message = _insert_queued(
        user, project, idempotency_key, commit, event=f"queued by {user.get_username()} via {via}{at}"
    )
    if message is None:
        return publishing  # a concurrent twin with the same key won the race
    try:
        send(Publishing, publishing.pk, message)
    except BaseException:
        # Never leave a row without a message: it has not run (attempts=0).
        Publishing.objects.filter(pk=publishing.pk, attempts=0).delete()
        raise
    with job_context(
        job_id=publishing.message_id,
        publishing_id=str(publishing.pk),
        project_id=str(project.pk),
        user_id=str(user.pk),
    ):
        logger.info("publishing %s queued for project %s", publishing.pk, project.pk)
    return publishing


def _parsed_commit(commit: str) -> str:
    try:
        return parse_commit(commit) if commit else ""
    except JobError as exc:
        raise ValidationError({"commit": exc.detail}) from exc


def _insert_queued(
    user: User, project: Project, idempotency_key: str | None, commit: str, *, event: str
) -> tuple[Publishing, dramatiq.Message[Any] | None]:
    """Insert the row as queued with its message, not sent yet; or return the twin (and None).

    The row, its message's id and its first log line in one transaction, one
    commit per initiate (docs/benchmarks.md). If the process dies before the
    message is sent, the reconciler finds the queued row with no message in
    the broker.
    """

    def twin_or_raise_if_active() -> Publishing | None:
        # A twin request (same user, same key) that got in first made the
        # active publishing: it must be answered with it, not a conflict.
        if idempotency_key and (existing := _by_idempotency_key(user, idempotency_key)):
            return _replay(existing, project.pk, commit)
        return _raise_if_active(project.pk, unless_key=(user.pk, idempotency_key))

    # No look first: the constraints decide, and the lookups run only when they refuse.
    for _ in range(2):
        try:
            created = Publishing(
                project=project,
                requested_by=user,
                idempotency_key=idempotency_key or None,
                requested_commit=commit,
            )
            created.take_settings_of(project)
            message = message_for(created)
            # Its own block: a refused insert leaves an enclosing transaction usable for the look-ups.
            with transaction.atomic():
                Publishing.objects.insert_queued(created, message_id=message.message_id, event=event)
            _without_attempts(created)
            return created, message
        except IntegrityError:
            # Lost a race: the constraints tell which rule the other request won.
            if twin := twin_or_raise_if_active():
                return twin, None
            # The winner is gone already (its broker call failed): try once more.
    raise PublishingConflict("Another request for this project is being processed; try again.")


def _without_attempts(publishing: Publishing) -> None:
    """Tell a publishing just made that it has no attempts, so that its answer lists them without a query.

    Django's prefetch cache, filled as prefetch_related fills it: an evaluated, empty queryset.
    """
    none = Attempt.objects.none()
    none._result_cache = []
    none._prefetch_done = True  # type: ignore[attr-defined]
    publishing._prefetched_objects_cache = {"attempt_history": none}  # type: ignore[attr-defined]


def _by_idempotency_key(user: User, key: str) -> Publishing | None:
    return Publishing.objects.filter(requested_by=user, idempotency_key=key).first()


def _replay(existing: Publishing, project_id: uuid.UUID | str, commit: str) -> Publishing:
    if str(existing.project_id) != str(project_id):
        raise PublishingConflict("This Idempotency-Key was already used for another project.")
    if existing.requested_commit != commit:
        raise PublishingConflict("This Idempotency-Key was already used for another commit.")
    return existing


def _raise_if_active(
    project_id: uuid.UUID | str, *, unless_key: tuple[int, str | None] | None = None
) -> Publishing | None:
    """Raise the conflict naming the project's active publishing; return it if it has `unless_key`.

    `unless_key` is (user id, idempotency key): that user's request with that
    key is the active publishing's twin, not its rival.
    """
    active = Publishing.objects.filter(project_id=project_id).active().first()
    if active is None:
        return None
    if unless_key and unless_key[1] and (active.requested_by_id, active.idempotency_key) == unless_key:
        return active
    raise PublishingConflict("This project already has a publishing in progress.", active_id=active.pk)


def _check_may_act_on(publishing: Publishing, by: User) -> None:
    if not authorization.may_act_on(by, publishing):
        raise Forbidden(
            "You may see this publishing but not cancel, retry or re-run it: "
            "that needs the change_publishing permission."
        )


def publishing_cancel(*, publishing: Publishing, by: User) -> Publishing:
    """Cancel a publishing before it submits; a running build is aborted. 409 once submitting or finished.

    Once the artifact is on its way to the target, cancelling could only lie:
    the submission completes, and the publishing with it.
    """
    _check_may_act_on(publishing, by)
    try:
        Publishing.objects.transition(
            publishing.pk,
            Status.CANCELLED,
            only_from=Publishing.CANCELLABLE_STATUSES,
            error_code="CANCELLED",
            error_message=f"Cancelled by {by.get_username()}.",
            not_before=None,
            event=f"cancelled by {by.get_username()}",
        )
    except InvalidTransition as exc:
        publishing.refresh_from_db()
        raise PublishingConflict(
            f"The publishing is already {publishing.status}; it cannot be cancelled."
        ) from exc
    publishing.refresh_from_db()
    # Closed here, not by the worker: a dead worker would leave it running forever.
    finish_attempt(
        publishing.pk, publishing.attempts, Outcome.CANCELLED, error_message=publishing.error_message
    )
    logger.info("publishing %s cancelled by %s", publishing.pk, by.get_username())
    if publishing.message_id:
        _abort(publishing.message_id)
    return publishing


def _abort(message_id: str) -> None:
    """Ask workers to skip or interrupt a message; best effort (the status already stops it before submit)."""
    try:
        broker.abort(message_id)
    except BrokerUnavailable:
        logger.warning("could not signal the abort of message %s; it will stop at its next step", message_id)


def publishing_retry(*, publishing: Publishing, by: User) -> Publishing:
    """Queue a failed or cancelled publishing again, with the settings it was initiated with.

    409 unless failed or cancelled, or while another one of its project is active.
    """
    _check_may_act_on(publishing, by)
    previous_status = publishing.status
    previous: dict[str, Any] = {
        "error_code": publishing.error_code,
        "error_message": publishing.error_message,
        "progress": publishing.progress,
    }
    if publishing.status not in Publishing.RETRYABLE_STATUSES:
        raise PublishingConflict(
            f"Only failed or cancelled publishings can be retried, not {publishing.status}."
        )
    if publishing.project_id is None:
        raise PublishingConflict("The project of this publishing was deleted.")
    broker.ensure_available()
    try:
        enqueue(
            publishing,
            sources=(publishing.status,),
            progress=0,
            error_code="",
            error_message="",
            event=f"queued again by {by.get_username()} (retry)",
        )
    except IntegrityError as exc:
        _raise_if_active(publishing.project_id)
        raise PublishingConflict("The publishing changed meanwhile; reload it.") from exc
    except InvalidTransition as exc:
        raise PublishingConflict("The publishing changed meanwhile; reload it.") from exc
    except BrokerUnavailable:
        # Back to where it was, as if the request never came (no message exists).
        with contextlib.suppress(InvalidTransition):
            Publishing.objects.transition(
                publishing.pk,
                previous_status,
                attempt=publishing.attempts,
                notify=False,
                event="retry undone: the broker is unavailable",
                **previous,
            )
        raise
    publishing.refresh_from_db()
    logger.info("publishing %s retried by %s", publishing.pk, by.get_username())
    return publishing


def publishing_rerun(*, publishing: Publishing, by: User) -> Publishing:
    """Queue a new publishing of this one's project at the commit it checked out; returns the new one.

    For any finished publishing, published ones included: publishing an earlier commit again is a
    rollback (the package is deterministic: the same commit and build give the same archive). The
    new one runs with the project's settings of now, as any initiate; a publishing that never got to
    its checkout is re-run with the commit it asked for (its ref's head if none). 409 while this one
    or another of its project is active, or when its project was deleted.
    """
    _check_may_act_on(publishing, by)
    if not publishing.is_terminal:
        raise PublishingConflict(f"Only finished publishings can be re-run, not {publishing.status}.")
    if publishing.project_id is None:
        raise PublishingConflict("The project of this publishing was deleted.")
    commit = publishing.commit_sha or publishing.requested_commit
    rerun = publishing_initiate(
        user=by, project_id=publishing.project_id, commit=commit, via=f"re-run of {publishing.pk}"
    )
    logger.info("publishing %s re-run by %s as %s at %s", publishing.pk, by.get_username(), rerun.pk, commit)
    return rerun
