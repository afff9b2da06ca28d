"""Dead-lettered jobs: do what each still needs, as the database says."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.contrib.auth.models import User

from publishing import broker, jobs
from publishing.exceptions import BrokerUnavailable, Forbidden, PublishingConflict
from publishing.models import Publishing, WebhookDelivery
from publishing.services.publishings import publishing_retry
from publishing.services.webhooks import delivery_resend

logger = logging.getLogger(__name__)

Status = Publishing.Status


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
    report = DeadLetterRequeue()

    def handle(message: broker.DeadLetter) -> bool:
        if report.broker_unavailable:
            report.left += 1
            return False
        try:
            if message.actor_name == jobs.BUILD_ACTOR:
                return _dead_build(
                    jobs.as_uuid(jobs.argument(message.args, message.kwargs, "publishing_id")),
                    by=by,
                    report=report,
                )
            if message.actor_name == jobs.WEBHOOK_ACTOR:
                return _dead_delivery(
                    jobs.as_uuid(jobs.argument(message.args, message.kwargs, "delivery_id")), report=report
                )
        except BrokerUnavailable:
            report.broker_unavailable = True
            report.left += 1
            return False
        report.left += 1
        report.note(f"Message {message.message_id} of {message.actor_name} left alone.")
        return False

    for queue in dict.fromkeys([jobs.build_queue(), jobs.webhook_queue()]):
        try:
            broker.sweep_dead_letters(queue, handle)
        except BrokerUnavailable:
            report.broker_unavailable = True
            break
    logger.info("dead letters handled for %s: %s", by.get_username(), report)
    return report


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
