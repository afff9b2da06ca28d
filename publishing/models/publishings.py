"""Publishings and their attempts; the publishing status machine lives here."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from publishing.exceptions import InvalidTransition
from publishing.models.log import LogLine
from publishing.models.projects import Project
from publishing.signals import publishing_finished


class PublishingQuerySet(models.QuerySet["Publishing"]):
    def active(self) -> PublishingQuerySet:
        return self.filter(status__in=Publishing.ACTIVE_STATUSES)

    def transition(
        self,
        pk: uuid.UUID | str,
        to: str,
        *,
        attempt: int | None = None,
        message_id: str | None = None,
        only_from: Collection[str] | None = None,
        notify: bool = True,
        new_message_id: str | None = None,
        event: str = "",
        event_attempt: int | None = None,
        savepoint: bool = True,
        **changes: Any,
    ) -> dict[str, Any]:
        """Move one publishing to `to` by compare-and-set; raise InvalidTransition if not allowed.

        The one way a publishing's status changes (after `insert_queued`): the move must be
        in `Publishing.TRANSITIONS`. With `attempt` and `message_id` (the fence), the move only
        happens while that run still owns the publishing: a requeue or retry gives it a new message
        (`new_message_id`), so a straggling older run can never overwrite a newer one.
        `only_from` narrows the allowed sources for a caller with a stricter rule.
        `notify=False` restores a terminal status without announcing it again.
        `event`, what happened in the log's words, is logged with the move (as of `event_attempt`).
        `savepoint=False` inside a caller's block that already isolates the move (or is undone whole).
        Returns the values written, for the caller's instance to say what the row now says.
        """
        sources = Publishing.TRANSITIONS.get(to, frozenset())
        if only_from is not None:
            sources = sources & frozenset(only_from)
        guard = Q(pk=pk, status__in=sources)
        if attempt is not None:
            guard &= Q(attempts=attempt)
        if message_id is not None:
            guard &= Q(message_id=message_id)
        now = timezone.now()
        values = {
            "status": to,
            **_moved_values(to, now, new_message_id=new_message_id, event=event, changes=changes),
        }
        terminal = to in Publishing.TERMINAL_STATUSES
        # Atomic with the receivers of `publishing_finished`: what they record
        # (a webhook delivery) exists exactly when the terminal status does; and with its event, so
        # that a reader of the log who sees the status sees what led to it.
        with transaction.atomic(savepoint=savepoint) if terminal or event else contextlib.nullcontext():
            if not self.filter(guard).update(**values):
                current = self.filter(pk=pk).values_list("status", flat=True).first()
                raise InvalidTransition(
                    f"Publishing {pk} cannot move from {current or 'nowhere'} to {to}.",
                )
            if event:
                number = changes.get("attempts", attempt if event_attempt is None else event_attempt)
                self._log_event(pk, number, event)
            if terminal and notify:
                publishing_finished.send(sender=Publishing, publishing_id=pk, status=to)
        return values

    def insert_queued(self, publishing: Publishing, *, message_id: str, event: str) -> None:
        """Insert a new publishing as queued with its message's id, and `event` as its first log line.

        The row that inserting it as pending and moving it to queued would leave, in two statements
        instead of three. Atomic with the caller's transaction, without a savepoint of its own: a
        caller that carries on after a refused insert (IntegrityError) wraps it in one.
        """
        now = timezone.now()
        publishing.status = Publishing.Status.QUEUED
        publishing.message_id = message_id
        publishing.created_at = publishing.updated_at = publishing.queued_at = now
        publishing.log_size = LogLine.size_of(event)
        with transaction.atomic(using=self.db, savepoint=False):
            publishing.save(force_insert=True, using=self.db)
            self._log_event(publishing.pk, publishing.attempts, event)

    def _log_event(self, pk: uuid.UUID | str, attempt: int | None, event: str) -> None:
        """Write `event` to the log, as of `attempt` or, if None, of the publishing's attempt now."""
        if attempt is None:
            attempt = self.filter(pk=pk).values_list("attempts", flat=True).get()
        LogLine.objects.bulk_create(LogLine.event(pk, attempt, event))


class WaitReason(models.TextChoices):
    # A transient failure's retry, after Dramatiq's backoff.
    RETRY_BACKOFF = "retry_backoff"
    # The global limit on job starts is reached: the message waits for its slot.
    RATE_LIMIT = "rate_limit"


def _moved_values(
    to: str, now: datetime, *, new_message_id: str | None, event: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """What a move to `to` writes besides the status: the times it sets, the message, the log size."""
    values: dict[str, Any] = {"updated_at": now, **changes}
    if new_message_id is not None:
        values["message_id"] = new_message_id
    if to in Publishing.TERMINAL_STATUSES:
        values.setdefault("finished_at", now)
    if to == Publishing.Status.QUEUED:
        values.setdefault("queued_at", now)
        values.setdefault("finished_at", None)
    if event:
        values["log_size"] = models.F("log_size") + LogLine.size_of(event)
    return values


class Publishing(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        BUILDING = "building"
        SUBMITTING = "submitting"
        PUBLISHED = "published"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL_STATUSES: ClassVar[frozenset[str]] = frozenset(
        {Status.PUBLISHED, Status.FAILED, Status.CANCELLED}
    )
    ACTIVE_STATUSES: ClassVar[frozenset[str]] = frozenset(
        {Status.PENDING, Status.QUEUED, Status.BUILDING, Status.SUBMITTING}
    )
    # Once the artifact is on its way to the target, cancelling could only lie: the submission completes.
    CANCELLABLE_STATUSES: ClassVar[frozenset[str]] = frozenset(
        {Status.PENDING, Status.QUEUED, Status.BUILDING}
    )
    RETRYABLE_STATUSES: ClassVar[frozenset[str]] = frozenset({Status.FAILED, Status.CANCELLED})
    # Target status -> the statuses it may be reached from: every move there is, and the only place
    # moves are defined; `PublishingQuerySet.transition` enforces it (test_models lists them).
    # queued -> queued is a new message for a queued publishing (its send failed or its message was
    # lost); building/submitting -> queued a requeue (a transient failure waiting for its retry, or an
    # attempt whose worker died); failed/cancelled -> queued a retry.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        Status.QUEUED: frozenset(
            {Status.PENDING, Status.QUEUED, Status.BUILDING, Status.SUBMITTING} | RETRYABLE_STATUSES
        ),
        Status.BUILDING: frozenset({Status.QUEUED}),
        Status.SUBMITTING: frozenset({Status.BUILDING}),
        Status.PUBLISHED: frozenset({Status.SUBMITTING}),
        Status.FAILED: ACTIVE_STATUSES,
        Status.CANCELLED: CANCELLABLE_STATUSES,
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # SET_NULL: publishings are business records that outlive their project.
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, related_name="publishings")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="publishings",
    )
    # The project's settings this publishing runs with, copied when it is initiated: a change to
    # the project afterwards never reaches a queued, running or retried publishing.
    repository_url = models.CharField(max_length=500, blank=True, default="")
    ref = models.CharField(max_length=255, blank=True, default="")
    build_command = models.TextField(blank=True, default="")
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    target_url = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text="Pipeline runs started.")
    message_id = models.CharField(max_length=64, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    # The log itself is LogLine rows; these count what is kept and what the cap has dropped.
    log_size = models.PositiveIntegerField(default=0, help_text="Characters of log kept.")
    log_dropped = models.PositiveIntegerField(default=0, help_text="Oldest log lines dropped by the cap.")
    # The commit asked for (a full commit id or a tag of the ref's history; empty: its head), and the
    # one its last attempt checked out as git read it there: id, subject, "Name <email>" (empty before).
    requested_commit = models.CharField(max_length=255, blank=True, default="")
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    commit_subject = models.CharField(max_length=500, blank=True, default="")
    commit_author = models.CharField(max_length=255, blank=True, default="")
    artifact_sha256 = models.CharField(max_length=64, blank=True, default="")
    artifact_size = models.BigIntegerField(null=True, blank=True)
    artifact_uri = models.CharField(max_length=1000, blank=True, default="")
    submission_ref = models.CharField(max_length=500, blank=True, default="")
    # NULL, not "": a unique constraint must ignore publishings without a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="Queued and waiting (see wait_reason): the expected start."
    )
    wait_reason = models.CharField(
        max_length=16, choices=WaitReason.choices, blank=True, default="", help_text="Why not_before is set."
    )
    retries = models.PositiveSmallIntegerField(
        default=0, help_text="Retries of a transient failure behind the next or running attempt."
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the running attempt's worker."
    )
    worker = models.CharField(
        max_length=255, blank=True, default="", help_text="The worker (host:pid) that ran the last attempt."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = PublishingQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["pending", "queued", "building", "submitting"]),
                name="publishing_one_active_per_project",
            ),
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="publishing_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "pending",
                        "queued",
                        "building",
                        "submitting",
                        "published",
                        "failed",
                        "cancelled",
                    ]
                ),
                name="publishing_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0, progress__lte=100), name="publishing_progress_0_100"
            ),
            models.CheckConstraint(
                condition=~Q(status="published") | (~Q(artifact_sha256="") & Q(progress=100)),
                name="publishing_published_has_artifact",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["published", "failed", "cancelled"]) | Q(finished_at__isnull=False),
                name="publishing_terminal_has_finished_at",
            ),
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="publishing_status_updated")]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    def take_settings_of(self, project: Project) -> None:
        """Copy the project's settings that decide what runs and where it goes (not saved)."""
        for field in SNAPSHOT_FIELDS:
            setattr(self, field, getattr(project, field))


# What a publishing copies from its project when it is initiated.
SNAPSHOT_FIELDS = ("repository_url", "ref", "build_command", "artifact_path", "target_url")


class Attempt(models.Model):
    """One run of the pipeline for a publishing: who ran it, when, and how it ended."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        PUBLISHED = "published"
        # Failed transiently; the publishing was queued for another attempt.
        RETRYING = "retrying"
        FAILED = "failed"
        CANCELLED = "cancelled"
        # Its worker died or shut down mid-way; the publishing was requeued.
        LOST = "lost"
        # The publishing moved on without it (requeued elsewhere, changed meanwhile).
        SUPERSEDED = "superseded"

    publishing = models.ForeignKey(Publishing, on_delete=models.CASCADE, related_name="attempt_history")
    number = models.PositiveIntegerField()
    message_id = models.CharField(max_length=64, blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    log_excerpt = models.TextField(blank=True, default="", help_text="The end of this attempt's log.")
    # The commit this attempt checked out, if it got that far.
    commit_sha = models.CharField(max_length=64, blank=True, default="")
    commit_subject = models.CharField(max_length=500, blank=True, default="")
    commit_author = models.CharField(max_length=255, blank=True, default="")
    # Its steps as they ran, in order (see AttemptLog.step): a page tells each step's state and which of
    # the log's events are its own without reading the events' words.
    steps = models.JSONField(
        default=list,
        blank=True,
        help_text="The steps it ran: name, state (running, done, stopped), started_at, finished_at.",
    )

    class Meta:
        ordering = ["publishing", "number"]
        constraints = [
            models.UniqueConstraint(fields=["publishing", "number"], name="attempt_unique_number"),
            models.CheckConstraint(
                condition=Q(outcome="running", finished_at__isnull=True)
                | (~Q(outcome="running") & Q(finished_at__isnull=False)),
                name="attempt_finished_iff_not_running",
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.publishing_id} ({self.outcome})"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
