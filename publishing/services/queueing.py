"""Queueing a publishing: its row moves to queued with a new message, then the message goes to the broker."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
from django.db import transaction

from publishing import broker, jobs
from publishing.models import Publishing, WebhookDelivery

logger = logging.getLogger(__name__)

Status = Publishing.Status


def enqueue(
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
    send(
        Publishing,
        publishing.pk,
        queue(publishing, sources=sources, attempt=attempt, retries=retries, **changes),
    )


def queue(
    publishing: Publishing,
    *,
    sources: tuple[str, ...],
    attempt: int | None = None,
    retries: int = 0,
    **changes: Any,
) -> dramatiq.Message[Any]:
    """Move the publishing to queued with a new message, and return the message (not sent yet)."""
    message = message_for(publishing, retries=retries)
    # Its own (sub)transaction: committed (with the caller's, if any) before the
    # message is sent, and a unique-constraint refusal does not break an
    # enclosing transaction. It isolates the move: the transition needs no savepoint of its own.
    with transaction.atomic():
        values = Publishing.objects.transition(
            publishing.pk,
            Status.QUEUED,
            attempt=attempt,
            only_from=sources,
            new_message_id=message.message_id,
            event_attempt=publishing.attempts if attempt is None else attempt,
            not_before=None,
            wait_reason="",
            retries=retries,
            heartbeat_at=None,
            savepoint=False,
            **changes,
        )
    for name, value in values.items():  # the instance says what the row now says
        setattr(publishing, name, value)
    return message


def message_for(publishing: Publishing, *, retries: int = 0) -> dramatiq.Message[Any]:
    """A new build message for the publishing; `retries` carries a retry count over to it."""
    return jobs.build_message(
        publishing_id=str(publishing.pk),
        project_id=str(publishing.project_id),
        user_id=str(publishing.requested_by_id),
        owner_id=str(publishing.project.owner_id if publishing.project else publishing.requested_by_id),
        retries=retries,
    )


def send(
    model: type[Publishing] | type[WebhookDelivery], pk: uuid.UUID | str, message: dramatiq.Message[Any]
) -> None:
    """Hand the message of a queued publishing, or of a pending webhook delivery, to the broker.

    If the broker refuses, the record says plainly that it has no message (on any broker), and the
    reconciler sends one; unless it is no longer waiting for it: a send that timed out may still have
    arrived, and a worker that took the message owns the record and its message id.
    """
    try:
        broker.enqueue(message)
    except BaseException:
        model.objects.filter(pk=pk, message_id=message.message_id, **_waiting(model)).update(message_id="")
        raise


def _waiting(model: type[Publishing] | type[WebhookDelivery]) -> dict[str, str]:
    """The filter of a record still waiting for its message: a queued publishing, a pending delivery."""
    if model is Publishing:
        return {"status": Status.QUEUED}
    return {"state": WebhookDelivery.State.PENDING}
