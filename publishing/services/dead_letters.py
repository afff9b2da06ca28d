"""Dead-lettered jobs: list them, do what each still needs as the database says, or discard them.

Every pass goes through `broker.sweep_dead_letters`, the one way to see dead letters on every backend
(RabbitMQ can only remove a message by taking it): a listing removes nothing, a requeue or a discard
removes the letters it names (all of them for the overview's requeue-all).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.contrib.auth.models import User

from publishing import broker, jobs
from publishing.exceptions import BrokerUnavailable, Forbidden, PublishingConflict
from publishing.models import Publishing, WebhookDelivery
from publishing.redaction import redact_credentials
from publishing.services.publishings import publishing_retry
from publishing.services.webhooks import delivery_resend

logger = logging.getLogger(__name__)

Status = Publishing.Status
# The reason shown for a dead letter: the traceback's last line, cut at this many characters.
REASON_LENGTH = 300
# A discarded letter's message is logged whole up to this many characters (a poison body may be huge).
LOGGED_BODY_LENGTH = 4000


@dataclass
class DeadLetterRequeue:
    """What `dead_letters_requeue` did. `left` is what stays dead-lettered."""

    requeued: int = 0
    dropped: int = 0
    left: int = 0
    # Asked for by id and not found: requeued or discarded meanwhile, or never there.
    missing: int = 0
    broker_unavailable: bool = False
    notes: tuple[str, ...] = ()

    def note(self, text: str) -> None:
        self.notes = (*self.notes, text)

    def __str__(self) -> str:
        away = " (the broker is unavailable)" if self.broker_unavailable else ""
        return f"{self.requeued} requeued, {self.dropped} dropped as obsolete, {self.left} left{away}"


def dead_letters_requeue(*, by: User, message_ids: Collection[str] | None = None) -> DeadLetterRequeue:
    """Do what each dead-lettered job still needs, as the database says, and remove its letter. Safe to rerun.

    `message_ids` names the letters to handle; None handles them all (the overview's requeue-all).
    - `build_and_submit` whose publishing is failed: retried as `by`; any
      other status, or no publishing: obsolete, dropped;
    - `deliver_webhook` whose delivery is failed: resent; otherwise dropped;
    - other actors' messages stay, and so does everything once the broker is away.
    """
    report = DeadLetterRequeue()

    def handle(message: broker.DeadLetter) -> bool:
        if report.broker_unavailable:
            report.left += 1
            return False
        try:
            if message.actor_name == jobs.BUILD_ACTOR:
                return _dead_build(_id(message, "publishing_id"), by=by, report=report)
            if message.actor_name == jobs.WEBHOOK_ACTOR:
                return _dead_delivery(_id(message, "delivery_id"), report=report)
        except BrokerUnavailable:
            report.broker_unavailable = True
            report.left += 1
            return False
        report.left += 1
        report.note(f"Message {message.message_id} of {message.actor_name} left alone.")
        return False

    missing = _sweep(handle, message_ids)
    report.broker_unavailable = report.broker_unavailable or missing is None
    report.missing = len(missing or ())
    logger.info("dead letters handled for %s: %s", by.get_username(), report)
    return report


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter, as the overview lists it: what the message says and what the database says now."""

    message_id: str
    queue: str
    actor: str
    # "publishing" or "delivery" with the id the message names; "" for another actor's message.
    kind: str
    target_id: uuid.UUID | None
    # The publishing's status or the delivery's state now; None when there is no such row (any more).
    status: str | None
    # When it last failed (Dramatiq's Retries notes it; else its publishing's finish), else None: then
    # only when it was sent is known.
    failed_at: datetime | None
    sent_at: datetime
    reason: str


def dead_letters_list(*, limit: int = 100) -> list[DeadLetterRow]:
    """The dead letters of the build and webhook queues, oldest first, up to `limit` a queue; removes
    nothing. Raises BrokerUnavailable."""
    letters: list[broker.DeadLetter] = []

    def keep(message: broker.DeadLetter) -> bool:
        letters.append(message)
        return False

    for queue in _queues():
        broker.sweep_dead_letters(queue, keep, limit=limit)
    builds = {_id(m, "publishing_id") for m in letters if m.actor_name == jobs.BUILD_ACTOR}
    hooks = {_id(m, "delivery_id") for m in letters if m.actor_name == jobs.WEBHOOK_ACTOR}
    publishings = Publishing.objects.filter(pk__in=builds - {None}).values_list(
        "pk", "status", "error_code", "error_message", "finished_at"
    )
    now = {
        pk: _Now(status, f"{code}: {message}" if code else "", finished)
        for pk, status, code, message, finished in publishings
    }
    for pk, state in WebhookDelivery.objects.filter(pk__in=hooks - {None}).values_list("pk", "state"):
        now[pk] = _Now(state, "", None)
    return [_row(message, now) for message in letters]


class _Now(NamedTuple):
    """What the database says now of the publishing or delivery a letter names."""

    status: str
    error: str
    finished_at: datetime | None


@dataclass
class DeadLetterDiscard:
    """What `dead_letters_discard` did: what each discarded letter was for, and what it meant."""

    discarded: list[str] = field(default_factory=list)
    missing: int = 0
    broker_unavailable: bool = False


def dead_letters_discard(*, by: User, message_ids: Collection[str]) -> DeadLetterDiscard:
    """Remove the named dead letters without running them; each one is logged whole (its message
    redacted), and the report says what it was for and the state its publishing or delivery is in."""
    report = DeadLetterDiscard()
    taken: list[tuple[broker.DeadLetter, str]] = []

    def take(message: broker.DeadLetter) -> bool:
        taken.append((message, _what_discarding_means(message)))
        return True

    missing = _sweep(take, message_ids)
    report.broker_unavailable = missing is None
    report.missing = len(missing or ())
    for message, meaning in taken:
        report.discarded.append(meaning)
        logger.warning(
            "dead letter %s of %s discarded by %s: %s; the message was %s",
            message.message_id,
            message.actor_name,
            by.get_username(),
            meaning,
            redact_credentials(message.encode().decode(errors="replace"))[:LOGGED_BODY_LENGTH],
        )
    return report


def _queues() -> list[str]:
    return list(dict.fromkeys([jobs.build_queue(), jobs.webhook_queue()]))


def _sweep(
    handle: Callable[[broker.DeadLetter], bool], message_ids: Collection[str] | None
) -> set[str] | None:
    """Show `handle` the dead letters (only those named in `message_ids`, unless None); the names not
    found, or None when the broker went away."""
    wanted = None if message_ids is None else set(message_ids)
    found: set[str] = set()

    def each(message: broker.DeadLetter) -> bool:
        if wanted is not None and message.message_id not in wanted:
            return False
        found.add(message.message_id)
        return handle(message)

    for queue in _queues():
        try:
            broker.sweep_dead_letters(queue, each)
        except BrokerUnavailable:
            return None
    return (wanted or set()) - found


def _row(message: broker.DeadLetter, now: dict[uuid.UUID, _Now]) -> DeadLetterRow:
    """A letter's row, with what the database says now of each publishing and delivery named."""
    kind = {jobs.BUILD_ACTOR: "publishing", jobs.WEBHOOK_ACTOR: "delivery"}.get(message.actor_name, "")
    target = _id(message, f"{kind}_id") if kind else None
    row = now.get(target) if target else None
    failed_ms = message.options.get("requeue_timestamp")
    return DeadLetterRow(
        message_id=message.message_id,
        queue=message.queue_name,
        actor=message.actor_name,
        kind=kind,
        target_id=target,
        status=row.status if row else None,
        failed_at=_from_ms(failed_ms) if isinstance(failed_ms, int) else row.finished_at if row else None,
        sent_at=_from_ms(message.message_timestamp),
        reason=_reason(message, row.error if row else ""),
    )


def _from_ms(milliseconds: int) -> datetime:
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def _reason(message: broker.DeadLetter, error: str) -> str:
    """The last line of the traceback Dramatiq's Retries kept, else the publishing's own error (a permanent
    error fails it for good without a traceback), else what their absence means; credentials redacted."""
    traceback = message.options.get("traceback")
    lines = [line.strip() for line in str(traceback or "").splitlines() if line.strip()]
    if lines or error:
        return redact_credentials(lines[-1] if lines else error)[:REASON_LENGTH]
    return (
        "No traceback kept: a message its actor could not take, or a permanent error (the worker's log "
        "says which)."
    )


def _what_discarding_means(message: broker.DeadLetter) -> str:
    """`the dead letter of <actor> for publishing <id>: it stays failed; ...`, as the database says now."""
    if message.actor_name == jobs.BUILD_ACTOR:
        target = _id(message, "publishing_id")
        publishing = Publishing.objects.filter(pk=target).first() if target else None
        head = f"the dead letter of {message.actor_name} for publishing {target}"
        if publishing is None:
            return f"{head}: no such publishing, nothing lost"
        if publishing.status == Status.FAILED:
            return f"{head}: it stays failed; Retry it from its page to run it again"
        return f"{head}: it is {publishing.status} now"
    if message.actor_name == jobs.WEBHOOK_ACTOR:
        target = _id(message, "delivery_id")
        delivery = WebhookDelivery.objects.filter(pk=target).first() if target else None
        head = f"the dead letter of {message.actor_name} for webhook delivery {target}"
        if delivery is None:
            return f"{head}: no such delivery, nothing lost"
        if delivery.state == WebhookDelivery.State.FAILED:
            return f"{head}: it stays failed; Resend it from the deliveries to send it again"
        return f"{head}: it is {delivery.state} now"
    return f"message {message.message_id} of {message.actor_name}: not Publisher's; its body is in the log"


def _id(message: broker.DeadLetter, name: str) -> uuid.UUID | None:
    return jobs.as_uuid(jobs.argument(message.args, message.kwargs, name))


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
