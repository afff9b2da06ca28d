"""Every write to projects and publishings, and the pipeline runner the actor calls."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import dramatiq_abort
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db import utils as db_utils
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from dramatiq.middleware.time_limit import TimeLimitExceeded

from publishing import authorization, broker, metrics, presence, webhooks
from publishing.authorization import AnyUser
from publishing.exceptions import (
    BrokerUnavailable,
    Forbidden,
    InvalidTransition,
    JobError,
    NotFound,
    PermanentJobError,
    PublishingConflict,
    StaleAttempt,
    TransientJobError,
)
from publishing.log_context import job_context
from publishing.models import Attempt, Project, Publishing
from publishing.pipeline import Job, Origin, get_pipeline, sandbox
from publishing.pipeline.checkout import validate_ref, validate_source_url
from publishing.pipeline.network import redact_credentials
from publishing.pipeline.package import EXCLUDED_NAMES
from publishing.pipeline.stores import validate_target_url
from publishing.pipeline.workspace import sweep as pipeline_workspace_sweep
from publishing.pipeline.workspace import workspace as pipeline_workspace
from publishing.selectors import project_for

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome

PROJECT_FIELDS = (
    "name", "slug", "repository_url", "ref", "build_command", "artifact_path", "target_url",
    "webhook_url", "webhook_secret",
)  # fmt: skip
# Long enough that guessing it is out of reach; what GitHub and Stripe hand out is longer.
WEBHOOK_SECRET_MIN_LENGTH = 16


# --- Projects ---------------------------------------------------------------------


def project_validate(*, user: AnyUser, data: dict[str, Any], instance: Project | None = None) -> None:
    """Raise ValidationError (per field) for project settings this user may not use."""
    errors = _build_command_errors(user, data, instance)
    if "repository_url" in data:
        try:
            validate_source_url(
                data["repository_url"],
                allow_local=settings.PUBLISHING_ALLOW_LOCAL_SOURCES,
                allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS,
            )
        except JobError as exc:
            errors["repository_url"] = exc.detail
    if "target_url" in data:
        try:
            validate_target_url(data["target_url"])
        except JobError as exc:
            errors["target_url"] = exc.detail
    if "ref" in data:
        try:
            validate_ref(data["ref"])
        except JobError as exc:
            errors["ref"] = exc.detail
    artifact_path = data.get("artifact_path")
    if artifact_path is not None and (artifact_path.startswith("/") or ".." in Path(artifact_path).parts):
        errors["artifact_path"] = "Must be a relative path inside the checkout."
    elif artifact_path is not None and EXCLUDED_NAMES.intersection(Path(artifact_path).parts):
        errors["artifact_path"] = "Cannot be or lie inside .git: git's folder is never published."
    errors.update(_webhook_errors(data, instance))
    if errors:
        raise ValidationError(errors)


# What decides the code a build command runs: changing either lets other code run under an approved command.
CODE_FIELDS = ("repository_url", "ref")


def _build_command_errors(user: AnyUser, data: dict[str, Any], instance: Project | None) -> dict[str, str]:
    """A build command runs on the workers: setting one, or changing the code it runs, is a right.

    Without it (`publishing.set_build_command`), an owner may clear the command, and may change
    the repository or ref only by clearing it in the same request: an approved command is bound
    to the code it was approved for.
    """
    if authorization.may_set_build_command(user):
        return {}
    current = instance.build_command if instance else ""
    command = data.get("build_command", current)
    if command and command != current:
        return {"build_command": "Setting a build command needs the permission to set build commands."}
    if not (command and instance):
        return {}
    return {
        field: (
            f"This project's build command was approved for its repository and ref; changing the "
            f"{field} needs the permission to set build commands. To change it yourself, send "
            '"build_command": "" with it: the project then publishes its files without a build.'
        )
        for field in CODE_FIELDS
        if field in data and data[field] != getattr(instance, field)
    }


def _webhook_errors(data: dict[str, Any], instance: Project | None) -> dict[str, str]:
    """A webhook URL must be allowed and come with a signing secret: receivers verify every delivery."""
    errors: dict[str, str] = {}
    url = data.get("webhook_url", instance.webhook_url if instance else "")
    secret = data.get("webhook_secret", instance.webhook_secret if instance else "")
    if data.get("webhook_url"):
        try:
            webhooks.validate_webhook_url(url, allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS)
        except JobError as exc:
            errors["webhook_url"] = exc.detail
    if secret and len(secret) < WEBHOOK_SECRET_MIN_LENGTH:
        errors["webhook_secret"] = f"Must be at least {WEBHOOK_SECRET_MIN_LENGTH} characters."
    elif url and not secret:
        errors["webhook_secret"] = "Required with a webhook URL: every delivery is signed with it."  # noqa: S105
    return errors


def project_create(*, owner: User, **data: Any) -> Project:
    """Create a project for `owner`; the slug defaults to the slugified name."""
    project_validate(user=owner, data=data)
    fields = {key: value for key, value in data.items() if key in PROJECT_FIELDS}
    # A name without ASCII letters or digits slugifies to "": fall back to a unique one.
    fields["slug"] = fields.get("slug") or slugify(fields["name"])[:100] or f"project-{uuid.uuid4().hex[:8]}"
    if Project.objects.filter(owner=owner, slug=fields["slug"]).exists():
        raise ValidationError({"slug": "You already have a project with this slug."})
    try:
        with transaction.atomic():
            return Project.objects.create(owner=owner, **fields)
    except IntegrityError as exc:
        raise ValidationError({"slug": "You already have a project with this slug."}) from exc


def project_update(*, project: Project, by: AnyUser, **data: Any) -> Project:
    if not authorization.may_change_project(by, project):
        raise Forbidden(
            "You may see this project but not change it: that needs the change_project permission."
        )
    project_validate(user=by, data=data, instance=project)
    for key, value in data.items():
        if key in PROJECT_FIELDS:
            setattr(project, key, value)
    duplicate = ValidationError({"slug": "You already have a project with this slug."})
    if (
        "slug" in data
        and Project.objects.filter(owner=project.owner, slug=project.slug).exclude(pk=project.pk).exists()
    ):
        raise duplicate
    try:
        with transaction.atomic():
            project.save()
    except IntegrityError as exc:
        raise duplicate from exc
    return project


def project_delete(*, project: Project, by: AnyUser) -> None:
    """Delete a project; refused while one of its publishings is active. Publishings are kept."""
    if not authorization.may_delete_project(by, project):
        raise Forbidden(
            "You may see this project but not delete it: that needs the delete_project permission."
        )
    active = project.publishings.active().first()
    if active is not None:
        raise PublishingConflict("The project has an active publishing.", active_id=active.pk)
    project.delete()


# --- Initiating -----------------------------------------------------------------


def publishing_initiate(
    *,
    user: User,
    project_id: uuid.UUID | str,
    idempotency_key: str | None = None,
) -> Publishing:
    """Record a publishing and queue its job; returns at once.

    The same `idempotency_key` from the same user returns the same publishing.
    If the broker cannot take the message, nothing is kept and
    BrokerUnavailable is raised, so the request can simply be retried.
    """
    if idempotency_key:
        existing = _by_idempotency_key(user, idempotency_key)
        if existing is not None:
            return _replay(existing, project_id)
    project = project_for(user, project_id)
    if project is None:
        raise NotFound("Project not found.")
    if not authorization.may_publish(user, project):
        raise Forbidden(
            "You may see this project but not publish it: that needs the add_publishing permission."
        )
    broker.ensure_available()
    publishing, message = _insert_queued(user, project, idempotency_key)
    if message is None:
        return publishing  # a concurrent twin with the same key won the race
    try:
        _send(publishing, message)
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


def _insert_queued(
    user: User, project: Project, idempotency_key: str | None
) -> tuple[Publishing, dramatiq.Message[Any] | None]:
    """Insert the row and queue it with its message, not sent yet; or return the twin (and None).

    pending -> queued in one transaction: one commit per initiate, not two
    (docs/benchmarks.md). If the process dies before the message is sent, the
    reconciler finds the queued row with no message in the broker.
    """

    def twin_or_raise_if_active() -> Publishing | None:
        # A twin request (same user, same key) that got in first made the
        # active publishing: it must be answered with it, not a conflict.
        if idempotency_key and (existing := _by_idempotency_key(user, idempotency_key)):
            return _replay(existing, project.pk)
        return _raise_if_active(project.pk, unless_key=(user.pk, idempotency_key))

    # No look first: the constraints decide, and the lookups run only when they refuse.
    for _ in range(2):
        try:
            with transaction.atomic():
                created = Publishing(
                    project=project,
                    requested_by=user,
                    status=Status.PENDING,
                    idempotency_key=idempotency_key or None,
                )
                created.take_settings_of(project)
                created.save(force_insert=True)
                message = _queue(created, sources=(Status.PENDING,))
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


def _replay(existing: Publishing, project_id: uuid.UUID | str) -> Publishing:
    if str(existing.project_id) != str(project_id):
        raise PublishingConflict("This Idempotency-Key was already used for another project.")
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


def _enqueue(
    publishing: Publishing,
    *,
    sources: tuple[str, ...],
    attempt: int | None = None,
    retries: int = 0,
    **changes: Any,
) -> None:
    """Move the publishing to queued with a new message, then hand that message to the broker.

    The row is queued before the message exists, so a worker never sees a
    message whose row is not ready; callers decide what to do if the broker
    refuses. `retries` carries a retry count over to the new message.
    """
    _send(publishing, _queue(publishing, sources=sources, attempt=attempt, retries=retries, **changes))


def _queue(
    publishing: Publishing,
    *,
    sources: tuple[str, ...],
    attempt: int | None = None,
    retries: int = 0,
    **changes: Any,
) -> dramatiq.Message[Any]:
    """Move the publishing to queued with a new message, and return the message (not sent yet)."""
    from publishing.tasks import build_and_submit

    options: dict[str, Any] = {"retries": retries} if retries else {}
    message = build_and_submit.message_with_options(
        kwargs={
            "publishing_id": str(publishing.pk),
            "project_id": str(publishing.project_id),
            "user_id": str(publishing.requested_by_id),
        },
        # An option, not an argument: whose share of the rate limit its start counts against, for
        # middleware.RateLimit; workers of any version take the message.
        owner_id=str(publishing.project.owner_id if publishing.project else publishing.requested_by_id),
        **options,
    )
    guard = Q(pk=publishing.pk, status__in=sources)
    if attempt is not None:
        guard &= Q(attempts=attempt)
    now = timezone.now()
    values: dict[str, Any] = {
        "status": Status.QUEUED,
        "message_id": message.message_id,
        "queued_at": now,
        "updated_at": now,
        "finished_at": None,
        "not_before": None,
        "heartbeat_at": None,
        **changes,
    }
    # Its own (sub)transaction: committed (with the caller's, if any) before the
    # message is sent, and a unique-constraint refusal does not break an
    # enclosing transaction.
    with transaction.atomic():
        moved = Publishing.objects.filter(guard).update(**values)
    if not moved:
        raise InvalidTransition(f"Publishing {publishing.pk} cannot be queued from {publishing.status}.")
    for name, value in values.items():  # the instance says what the row now says
        setattr(publishing, name, value)
    return message


def _send(publishing: Publishing, message: dramatiq.Message[Any]) -> None:
    """Hand a queued publishing's message to the broker."""
    try:
        broker.enqueue(message)
    except BaseException:
        # Says "no message" plainly, on any broker: the reconciler sends one.
        Publishing.objects.filter(pk=publishing.pk, message_id=message.message_id).update(message_id="")
        raise


# --- Cancel, retry --------------------------------------------------------------------------


def _check_may_act_on(publishing: Publishing, by: User) -> None:
    if not authorization.may_act_on(by, publishing):
        raise Forbidden(
            "You may see this publishing but not cancel or retry it: "
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
            only_from=(Status.PENDING, Status.QUEUED, Status.BUILDING),
            error_code="CANCELLED",
            error_message=f"Cancelled by {by.get_username()}.",
            not_before=None,
        )
    except InvalidTransition as exc:
        publishing.refresh_from_db()
        raise PublishingConflict(
            f"The publishing is already {publishing.status}; it cannot be cancelled."
        ) from exc
    publishing.refresh_from_db()
    # Closed here, not by the worker: a dead worker would leave it running forever.
    _finish_attempt(
        publishing.pk, publishing.attempts, Outcome.CANCELLED, error_message=publishing.error_message
    )
    logger.info("publishing %s cancelled by %s", publishing.pk, by.get_username())
    if publishing.message_id:
        _abort(publishing.message_id)
    return publishing


def _abort(message_id: str) -> None:
    """Ask workers to skip or interrupt a message; best effort (the status already stops it before submit)."""
    from publishing.middleware import web_abortable

    try:
        broker.breaker.call(lambda: dramatiq_abort.abort(message_id, middleware=web_abortable()))
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
    if publishing.status not in (Status.FAILED, Status.CANCELLED):
        raise PublishingConflict(
            f"Only failed or cancelled publishings can be retried, not {publishing.status}."
        )
    if publishing.project_id is None:
        raise PublishingConflict("The project of this publishing was deleted.")
    broker.ensure_available()
    try:
        _enqueue(publishing, sources=(publishing.status,), progress=0, error_code="", error_message="")
    except IntegrityError as exc:
        _raise_if_active(publishing.project_id)
        raise PublishingConflict("The publishing changed meanwhile; reload it.") from exc
    except InvalidTransition as exc:
        raise PublishingConflict("The publishing changed meanwhile; reload it.") from exc
    except BrokerUnavailable:
        # Back to where it was, as if the request never came (no message exists).
        with contextlib.suppress(InvalidTransition):
            Publishing.objects.transition(
                publishing.pk, previous_status, attempt=publishing.attempts, notify=False, **previous
            )
        raise
    publishing.refresh_from_db()
    logger.info("publishing %s retried by %s", publishing.pk, by.get_username())
    return publishing


# --- Lifecycle (called by the worker middleware and the reconcile command) --------------------------


def publishing_defer(*, publishing_id: str | None, delay_ms: int) -> None:
    """Record when a rate-limited publishing is expected to start."""
    if publishing_id:
        now = timezone.now()
        # updated_at too: the reconciler leaves just-deferred rows alone while
        # their message moves to the delay queue.
        Publishing.objects.filter(pk=publishing_id, status=Status.QUEUED).update(
            not_before=now + timedelta(milliseconds=delay_ms), updated_at=now
        )


def publishing_message_lost(*, publishing_id: str | None, message_id: str) -> None:
    """Record that a queued publishing's message is gone, so that the next reconciliation sends a new one.

    Only while that message is still the publishing's: a stale one changes nothing. The old message,
    should it turn up after all, is then fenced out: it no longer names its publishing.
    """
    if publishing_id:
        Publishing.objects.filter(pk=publishing_id, status=Status.QUEUED, message_id=message_id).update(
            message_id="", updated_at=timezone.now()
        )


def publishing_heartbeat(*, running: list[tuple[str, str]]) -> None:
    """Renew the leases of the publishings running here, given as (publishing id, message id) pairs.

    Only the run that owns a publishing renews it: a straggler whose
    publishing was requeued (new message) keeps no one else's lease alive.
    """
    if running:
        owned = Q()
        for publishing_id, message_id in running:
            owned |= Q(pk=publishing_id, message_id=message_id)
        Publishing.objects.filter(owned, status__in=(Status.BUILDING, Status.SUBMITTING)).update(
            heartbeat_at=timezone.now()
        )


def publishing_requeue(*, publishing_id: str, reason: str, retries: int, attempt: int | None = None) -> bool:
    """Put a running publishing back in the queue with a new message; False if it moved on meanwhile.

    The attempt that was running loses ownership (fencing): it can no longer
    submit or record anything.
    """
    publishing = Publishing.objects.filter(pk=publishing_id).first()
    if publishing is None or publishing.status not in (Status.BUILDING, Status.SUBMITTING):
        return False
    attempt = publishing.attempts if attempt is None else attempt
    try:
        _enqueue(
            publishing,
            sources=(Status.BUILDING, Status.SUBMITTING),
            attempt=attempt,
            retries=retries,
            error_message=reason,
        )
    except InvalidTransition:
        return False
    except BrokerUnavailable:
        # Queued without a message: the next reconciliation sends one.
        logger.warning("publishing %s requeued but its message could not be sent yet", publishing_id)
    _finish_attempt(publishing_id, attempt, Outcome.LOST, error_message=reason)
    logger.info("publishing %s requeued: %s", publishing_id, reason)
    return True


@dataclass
class Reconciliation:
    sent_pending: int = 0
    requeued_lost: int = 0
    resent_queued: int = 0

    def __str__(self) -> str:
        return (
            f"{self.sent_pending} pending sent, {self.requeued_lost} lost attempts requeued, "
            f"{self.resent_queued} queued without a message sent again"
        )


def publishing_reconcile() -> Reconciliation:
    """Make the broker match the database, the source of truth. Safe to run anywhere, any time, in parallel.

    - `pending` for longer than the grace period (the process died between
      recording and queueing): queued now;
    - `building`/`submitting` whose lease ran out (the worker died): requeued;
    - `queued` for longer than the grace period with no message in the
      broker (for example Redis lost its data): sent again.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.PUBLISHING_RECONCILE_GRACE)
    report = Reconciliation()
    for publishing in Publishing.objects.filter(status=Status.PENDING, created_at__lt=grace):
        with contextlib.suppress(InvalidTransition, BrokerUnavailable):
            _enqueue(publishing, sources=(Status.PENDING,))
            report.sent_pending += 1
    lease_expired = now - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT)
    lost = Publishing.objects.filter(status__in=(Status.BUILDING, Status.SUBMITTING)).filter(
        Q(heartbeat_at__lt=lease_expired) | Q(heartbeat_at__isnull=True, started_at__lt=lease_expired)
    )
    for publishing in lost:
        if publishing_requeue(
            publishing_id=str(publishing.pk),
            reason="Its worker stopped answering; requeued.",
            retries=max(publishing.attempts - 1, 0),
            attempt=publishing.attempts,
        ):
            report.requeued_lost += 1
    for publishing in Publishing.objects.filter(status=Status.QUEUED, message_id=""):
        # Queued, but its enqueue failed (a requeue or retry during an outage).
        with contextlib.suppress(InvalidTransition, BrokerUnavailable):
            _enqueue(publishing, sources=(Status.QUEUED,), attempt=publishing.attempts)
            report.resent_queued += 1
    stale_queued = list(
        Publishing.objects.filter(status=Status.QUEUED, updated_at__lt=grace).exclude(message_id="")
    )
    if stale_queued:
        try:
            live = broker.live_message_ids()
        except BrokerUnavailable:
            live = None
        for publishing in stale_queued:
            if live is None or publishing.message_id in live:
                continue
            with contextlib.suppress(InvalidTransition, BrokerUnavailable):
                _enqueue(publishing, sources=(Status.QUEUED,), attempt=publishing.attempts)
                report.resent_queued += 1
    if report.sent_pending or report.requeued_lost or report.resent_queued:
        logger.warning("reconciled: %s", report)
    return report


def builds_sweep() -> tuple[int, int]:
    """Remove the workspaces, and kill the processes, of builds whose worker died on this host.

    Safe to run anywhere, any time, in parallel: a live build's workspace and uid are locked.
    Returns (workspaces removed, processes killed).
    """
    removed = pipeline_workspace_sweep()
    killed = 0
    if os.geteuid() == 0:
        killed = sandbox.sweep_uids(sandbox.SandboxPolicy.from_settings().uids)
        if killed:
            logger.warning("killed %d process(es) of builds whose worker died", killed)
    return len(removed), killed


def job_records_prune() -> tuple[int, int]:
    """Keep the newest PUBLISHING_RETENTION_COMPLETED completed and _FAILED failed job records.

    Job records are django-dramatiq's task rows and Redis' dead letters;
    publishings are business records and are never pruned. Returns the
    numbers of task rows deleted (done, failed).
    """
    from django_dramatiq.models import Task

    deleted = []
    for statuses, keep in (
        # Skipped (a cancelled or deferred message) is a completed job record too.
        ((Task.STATUS_DONE, Task.STATUS_SKIPPED), settings.PUBLISHING_RETENTION_COMPLETED),
        ((Task.STATUS_FAILED,), settings.PUBLISHING_RETENTION_FAILED),
    ):
        rows = Task.tasks.filter(status__in=statuses)
        if rows.count() <= keep:
            deleted.append(0)
            continue
        newest = list(rows.order_by("-updated_at", "-pk").values_list("pk", flat=True)[:keep])
        count, _ = rows.exclude(pk__in=newest).delete()
        deleted.append(count)
    with contextlib.suppress(BrokerUnavailable):
        broker.trim_dead_letters(keep=settings.PUBLISHING_RETENTION_FAILED)
    return deleted[0], deleted[1]


# --- Running (called by the actor) --------------------------------------------------------


def publishing_run(*, publishing_id: str, message_id: str, retries: int, max_retries: int) -> None:
    """Run one attempt of the pipeline for a publishing. Safe to run more than once for the same id.

    A finished, superseded or missing publishing is logged and skipped. Raises
    TransientJobError when the attempt should be retried and PermanentJobError
    when the publishing failed for good; either way the record says so first.
    """
    publishing = Publishing.objects.select_related("project").filter(pk=publishing_id).first()
    if publishing is None:
        # A ghost: initiate deletes a publishing whose send failed (its only delete), but a send
        # that timed out may have reached the broker all the same. The caller got a 503 and no
        # one waits for it; a dead letter or an ERROR would only page someone for nothing.
        logger.info(
            "message %s for publishing %s, which no longer exists: dropped", message_id, publishing_id
        )
        return
    if publishing.is_terminal:
        logger.info("publishing %s already %s; message skipped", publishing_id, publishing.status)
        return
    if publishing.message_id and publishing.message_id != message_id:
        logger.info(
            "publishing %s belongs to message %s; stale message skipped", publishing_id, publishing.message_id
        )
        return
    if publishing.status in (Status.BUILDING, Status.SUBMITTING):
        lease_expired = timezone.now() - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT)
        if publishing.heartbeat_at and publishing.heartbeat_at > lease_expired:
            # A duplicate delivery while the attempt still runs elsewhere.
            logger.info(
                "publishing %s is running elsewhere (lease held); duplicate message skipped", publishing_id
            )
            return
        # A redelivery: the worker that ran the last attempt died mid-way.
        logger.warning(
            "publishing %s was %s when its message came back; its last attempt was lost, starting again",
            publishing_id,
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
            )
        except InvalidTransition:
            logger.info("publishing %s changed while being resumed; message skipped", publishing_id)
            return
        _finish_attempt(
            publishing.pk, publishing.attempts, Outcome.LOST, error_message="Its worker stopped mid-way."
        )
    elif publishing.status != Status.QUEUED:
        logger.warning("publishing %s is %s, not queued; message skipped", publishing_id, publishing.status)
        return

    attempt = publishing.attempts + 1
    try:
        Publishing.objects.transition(
            publishing.pk,
            Status.BUILDING,
            attempt=publishing.attempts,
            message_id=message_id,
            attempts=attempt,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            not_before=None,
            worker=presence.worker_name(),
            progress=5,
            error_code="",
            error_message="",
        )
    except InvalidTransition:
        logger.info("publishing %s was taken or cancelled before it started; skipped", publishing_id)
        return
    logger.info(
        "publishing %s attempt %d started (retry %d of %d)", publishing_id, attempt, retries, max_retries
    )
    started = time.monotonic()
    log = _AttemptLog(publishing, attempt, message_id)
    try:
        Attempt.objects.create(
            publishing_id=publishing.pk,
            number=attempt,
            message_id=message_id,
            worker=presence.worker_name(),
        )
        _run_attempt(publishing, log)
    except StaleAttempt:
        metrics.attempt_finished("stopped")
        _finish_attempt(publishing.pk, attempt, _outcome_of_stopped(publishing.pk), log=log)
        logger.info("publishing %s attempt %d superseded or cancelled; stopped", publishing_id, attempt)
        return
    except (JobError, db_utils.OperationalError, db_utils.InterfaceError) as exc:
        error = (
            exc
            if isinstance(exc, JobError)
            else TransientJobError(f"Database unavailable: {exc}", code="DATABASE_UNAVAILABLE")
        )
        _record_failure(publishing, log, error, will_retry=error.transient and retries < max_retries)
        if error is exc:
            raise
        raise error from exc
    except TimeLimitExceeded:
        error = PermanentJobError("The job exceeded its time limit.", code="TIME_LIMIT_EXCEEDED")
        _record_failure(publishing, log, error, will_retry=False)
        raise
    except Exception as exc:
        logger.exception("publishing %s attempt %d crashed", publishing_id, attempt)
        error = PermanentJobError(f"Internal error: {type(exc).__name__}", code="INTERNAL_ERROR")
        _record_failure(publishing, log, error, will_retry=False)
        raise error from exc
    except BaseException:
        # Aborted by a cancellation or cut off by the shutdown deadline: whoever
        # moved the publishing closes the attempt; this only catches the rest.
        with contextlib.suppress(db_utils.Error):
            _finish_attempt(publishing.pk, attempt, _outcome_of_stopped(publishing.pk), log=log)
        raise
    _finish_attempt(publishing.pk, attempt, Outcome.PUBLISHED, log=log)
    metrics.attempt_finished("published")
    logger.info(
        "publishing %s published by attempt %d in %.1fs", publishing_id, attempt, time.monotonic() - started
    )


def _run_attempt(publishing: Publishing, log: _AttemptLog) -> None:
    attempt, message_id = log.attempt, log.message_id
    project = publishing.project
    if project is None:
        raise PermanentJobError("The project was deleted.", code="PROJECT_DELETED")
    pipeline = get_pipeline()
    with pipeline_workspace() as workspace:
        # The settings of the publishing, copied from the project when it was initiated.
        job = Job(
            publishing_id=str(publishing.pk),
            origin=Origin(
                owner_id=str(project.owner_id), project_id=str(project.pk), project_slug=project.slug
            ),
            repository_url=publishing.repository_url,
            ref=publishing.ref,
            build_command=publishing.build_command,
            artifact_path=publishing.artifact_path,
            target_url=publishing.target_url,
            workspace=workspace,
            log=log.append,
        )
        try:
            log.step(
                f"attempt {attempt}: checkout {redact_credentials(job.repository_url)}@{job.ref}",
                progress=10,
            )
            with metrics.step("checkout"):
                source = pipeline.checkout(job)
            log.step("build" if job.build_command.strip() else "build: no build command", progress=30)
            with metrics.step("build"):
                pipeline.build(job, source)
            log.step(f"package {job.artifact_path}", progress=60)
            with metrics.step("package"):
                artifact = pipeline.package(job, source)
            log.append(f"artifact sha256={artifact.sha256} size={artifact.size}\n")
            log.flush()
            # The fence: only the attempt that still owns the publishing may submit.
            _move(
                publishing,
                Status.SUBMITTING,
                attempt=attempt,
                message_id=message_id,
                progress=75,
                artifact_sha256=artifact.sha256,
                artifact_size=artifact.size,
            )
            log.step("submit", progress=None)
            with metrics.step("submit"):
                submission = pipeline.submit(job, artifact)
            log.append(f"submitted to {submission.uri}\n")
        finally:
            log.flush()
    _move(
        publishing,
        Status.PUBLISHED,
        attempt=attempt,
        message_id=message_id,
        progress=100,
        artifact_uri=submission.uri,
        submission_ref=submission.ref,
        log=log.text,
    )


def _move(publishing: Publishing, to: str, *, attempt: int, message_id: str, **changes: Any) -> None:
    try:
        Publishing.objects.transition(publishing.pk, to, attempt=attempt, message_id=message_id, **changes)
    except InvalidTransition as exc:
        raise StaleAttempt(str(exc)) from exc


def _record_failure(publishing: Publishing, log: _AttemptLog, error: JobError, *, will_retry: bool) -> None:
    attempt = log.attempt
    if will_retry:
        logger.warning(
            "publishing %s attempt %d failed (%s: %s); will retry",
            publishing.pk,
            attempt,
            error.code,
            error.detail,
        )
        target, message = Status.QUEUED, f"Attempt {attempt} failed: {error.detail} Retrying."
        metrics.attempt_finished("retry")
    else:
        logger.error(
            "publishing %s failed at attempt %d (%s: %s)", publishing.pk, attempt, error.code, error.detail
        )
        target, message = Status.FAILED, error.detail
        metrics.attempt_finished("failed")
    try:
        Publishing.objects.transition(
            publishing.pk,
            target,
            attempt=attempt,
            message_id=log.message_id,
            # Only while this attempt still runs it: a cancel keeps the attempt and message, and
            # cancelled -> queued is a retry's move, so without this a failure recorded as the owner
            # cancels would queue the publishing again and run it (test_runner_failures).
            only_from=(Status.BUILDING, Status.SUBMITTING),
            error_code=error.code,
            error_message=message,
        )
        outcome = Outcome.RETRYING if will_retry else Outcome.FAILED
        _finish_attempt(
            publishing.pk, attempt, outcome, error_code=error.code, error_message=error.detail, log=log
        )
    except InvalidTransition:
        logger.info(
            "publishing %s changed meanwhile; failure of attempt %d not recorded", publishing.pk, attempt
        )
        _finish_attempt(
            publishing.pk,
            attempt,
            _outcome_of_stopped(publishing.pk),
            error_code=error.code,
            error_message=error.detail,
            log=log,
        )
    except db_utils.Error:
        logger.exception("publishing %s: could not record the failure of attempt %d", publishing.pk, attempt)


def _outcome_of_stopped(publishing_id: uuid.UUID | str) -> str:
    """How an attempt that lost its publishing ended: cancelled, or superseded by another run."""
    status = Publishing.objects.filter(pk=publishing_id).values_list("status", flat=True).first()
    return Outcome.CANCELLED if status == Status.CANCELLED else Outcome.SUPERSEDED


def _finish_attempt(
    publishing_id: uuid.UUID | str,
    number: int,
    outcome: str,
    *,
    error_code: str = "",
    error_message: str = "",
    log: _AttemptLog | None = None,
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


class _AttemptLog:
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


# --- Dead letters -----------------------------------------------------------------------------


@dataclass
class DeadLetterRequeue:
    """What `dead_letters_requeue` did. `left` is what stays dead-lettered."""

    requeued: int = 0
    dropped: int = 0
    left: int = 0
    broker_unavailable: bool = False
    notes: tuple[str, ...] = ()

    def note(self, text: str) -> None:
        self.notes = (*self.notes, text)

    def __str__(self) -> str:
        away = " (the broker is unavailable)" if self.broker_unavailable else ""
        return f"{self.requeued} requeued, {self.dropped} dropped as obsolete, {self.left} left{away}"


def dead_letters_requeue(*, by: User) -> DeadLetterRequeue:
    """Do what each dead-lettered job still needs, as the database says, and remove its letter. Safe to rerun.

    - `build_and_submit` whose publishing is failed: retried as `by`; any
      other status, or no publishing: obsolete, dropped;
    - `deliver_webhook` whose delivery is failed: resent; otherwise dropped;
    - other actors' messages stay, and so does everything once the broker is away.
    """
    from publishing.tasks import build_and_submit, deliver_webhook

    report = DeadLetterRequeue()

    def handle(message: broker.DeadLetter) -> bool:
        if report.broker_unavailable:
            report.left += 1
            return False
        try:
            if message.actor_name == build_and_submit.actor_name:
                return _dead_build(_argument(message, "publishing_id"), by=by, report=report)
            if message.actor_name == deliver_webhook.actor_name:
                return _dead_delivery(_argument(message, "delivery_id"), report=report)
        except BrokerUnavailable:
            report.broker_unavailable = True
            report.left += 1
            return False
        report.left += 1
        report.note(f"Message {message.message_id} of {message.actor_name} left alone.")
        return False

    for queue in dict.fromkeys([build_and_submit.queue_name, deliver_webhook.queue_name]):
        try:
            broker.sweep_dead_letters(queue, handle)
        except BrokerUnavailable:
            report.broker_unavailable = True
            break
    logger.info("dead letters handled for %s: %s", by.get_username(), report)
    return report


def _argument(message: broker.DeadLetter, name: str) -> uuid.UUID | None:
    """The id an actor was sent, by keyword or as the first argument; None if it is not one."""
    # A poison message's kwargs may be anything JSON holds: one must not end the whole sweep.
    kwargs = message.kwargs if isinstance(message.kwargs, dict) else {}
    value = kwargs.get(name, message.args[0] if message.args else None)
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _dead_build(publishing_id: uuid.UUID | None, *, by: User, report: DeadLetterRequeue) -> bool:
    """True when the letter can go: its publishing was retried, or has moved on without it."""
    publishing = Publishing.objects.filter(pk=publishing_id).first() if publishing_id else None
    # A deleted project can never run again: its letter is as obsolete as a published one's.
    if publishing is None or publishing.status != Status.FAILED or publishing.project_id is None:
        report.dropped += 1
        return True
    try:
        publishing_retry(publishing=publishing, by=by)
    except (PublishingConflict, Forbidden) as exc:
        report.left += 1
        report.note(f"Publishing {publishing.pk} not retried: {exc.detail}")
        return False
    report.requeued += 1
    return True


def _dead_delivery(delivery_id: uuid.UUID | None, *, report: DeadLetterRequeue) -> bool:
    """True when the letter can go: its delivery was resent, or needs nothing more."""
    from publishing.models import WebhookDelivery
    from publishing.webhooks import delivery_resend

    delivery = (
        WebhookDelivery.objects.select_related("publishing__project").filter(pk=delivery_id).first()
        if delivery_id
        else None
    )
    if delivery is None or delivery.state != WebhookDelivery.State.FAILED:
        report.dropped += 1
        return True
    try:
        delivery_resend(delivery=delivery)
    except PublishingConflict:
        # Delivered or resent meanwhile, or the project dropped its webhook: nothing left to send.
        report.dropped += 1
        return True
    report.requeued += 1
    return True
