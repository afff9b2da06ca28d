"""Webhooks: every terminal status of a publishing, POSTed as signed JSON to its project's `webhook_url`.

A delivery is an outbox row (`WebhookDelivery`) written in the transaction
that finished the publishing, so it exists exactly when that status does. Its
message goes to the broker after commit; the row, not the broker, is the
truth: a failed enqueue leaves it pending and `deliveries_reconcile` sends it.
The `deliver_webhook` actor POSTs the stored body, signed with the project's
secret, and Dramatiq's Retries retries what may pass later. Delivery is
at least once: receivers deduplicate on `X-Publisher-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import dramatiq
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from dramatiq.middleware.time_limit import TimeLimitExceeded

from publishing import broker, jobs
from publishing.exceptions import (
    BrokerUnavailable,
    JobError,
    PermanentJobError,
    PublishingConflict,
    TransientJobError,
)
from publishing.log_context import job_context
from publishing.models import Publishing, WebhookDelivery
from publishing.pipeline.network import answer_error, check_host, post, split_url
from publishing.redaction import redact_credentials
from publishing.services.queueing import send

logger = logging.getLogger(__name__)

State = WebhookDelivery.State

SIGNATURE_HEADER = "X-Publisher-Signature"
EVENT_HEADER = "X-Publisher-Event"
DELIVERY_HEADER = "X-Publisher-Delivery"
USER_AGENT = "Publisher-Webhooks/1.0"
# Of an error answer, enough to say why in `last_error`; never a flood.
RESPONSE_READ_LIMIT = 4 * 1024


# --- What is sent ----------------------------------------------------------------------------


def sign(body: bytes, secret: str) -> str:
    """The X-Publisher-Signature of `body`: `sha256=` and the hex HMAC-SHA256 keyed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def validate_webhook_url(url: str, *, allow_private: bool) -> None:
    """Check a webhook URL's syntax and host policy without touching the network; raise PermanentJobError."""
    parts = split_url(url, what="webhook URL", code="WEBHOOK_INVALID")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise PermanentJobError("a webhook URL must be http(s)://host/path", code="WEBHOOK_INVALID")
    check_host(parts.hostname, allow_private=allow_private, code="WEBHOOK_NOT_ALLOWED", resolve=False)


def _timestamp(value: datetime | None) -> str | None:
    # As the API writes them (DRF): ISO 8601, UTC as "Z".
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def delivery_body(publishing: Publishing, *, delivery_id: uuid.UUID, event: str) -> str:
    """The JSON document a delivery sends: the publishing's outcome, without its log or any secret."""
    project = publishing.project
    payload = {
        "delivery": str(delivery_id),
        "event": event,
        "project": {
            "id": str(project.pk) if project else None,
            "slug": project.slug if project else None,
        },
        "publishing": {
            "id": str(publishing.pk),
            "status": publishing.status,
            "attempts": publishing.attempts,
            "error_code": publishing.error_code,
            "error_message": publishing.error_message,
            "commit_sha": publishing.commit_sha,
            "commit_subject": publishing.commit_subject,
            "commit_author": publishing.commit_author,
            "artifact_sha256": publishing.artifact_sha256,
            "artifact_size": publishing.artifact_size,
            "artifact_uri": publishing.artifact_uri,
            "submission_ref": publishing.submission_ref,
            "created_at": _timestamp(publishing.created_at),
            "finished_at": _timestamp(publishing.finished_at),
        },
    }
    # ASCII only: the stored text and the signed bytes are then the same thing.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


# --- Recording (the receiver of publishing_finished) ---------------------------------------------


def on_publishing_finished(
    sender: object, *, publishing_id: uuid.UUID | str, status: str, **kwargs: Any
) -> None:
    """Record one delivery of this terminal status if the project has a webhook; send it after commit.

    Runs inside the transaction of the transition: the row commits (or rolls
    back) with the status. The broker is only called after commit and its
    failure never reaches the transition.
    """
    publishing = (
        Publishing.objects.select_related("project")
        .filter(pk=publishing_id, project__isnull=False)
        .exclude(project__webhook_url="")
        .first()
    )
    if publishing is None or publishing.project is None:
        return
    delivery_id = uuid.uuid4()
    event = f"publishing.{Publishing.Status(status).value}"
    message = _message(delivery_id)
    # The message id is on the row from the start: an empty one then plainly
    # means "its enqueue failed", which the reconciler sends at once.
    WebhookDelivery.objects.create(
        id=delivery_id,
        publishing=publishing,
        url=publishing.project.webhook_url,
        event=event,
        body=delivery_body(publishing, delivery_id=delivery_id, event=event),
        message_id=message.message_id,
    )
    # robust: the status is committed by now; an unexpected error here must
    # not be mistaken by the caller for a failed transition (it is logged).
    transaction.on_commit(lambda: _send_after_commit(delivery_id, message), robust=True)


def _message(delivery_id: uuid.UUID) -> dramatiq.Message[Any]:
    return jobs.webhook_message(delivery_id=str(delivery_id))


def _send_after_commit(delivery_id: uuid.UUID, message: dramatiq.Message[Any]) -> None:
    try:
        send(WebhookDelivery, delivery_id, message)
    except BrokerUnavailable:
        logger.warning(
            "webhook delivery %s recorded but not sent yet; the reconciler will send it", delivery_id
        )


# --- Delivering (called by the actor) -------------------------------------------------------------


def delivery_run(*, delivery_id: str, message_id: str, retries: int, max_retries: int) -> None:
    """POST one delivery and record the outcome. Safe to run more than once for the same id.

    A finished or superseded delivery (its row belongs to another message) is
    logged and skipped. Raises TransientJobError when the POST should be
    retried, PermanentJobError when it failed for good; either way the row
    says so first, and on the last retry it is `failed`. A missing one raises
    PermanentJobError DELIVERY_NOT_FOUND: its message is dead-lettered.
    """
    delivery = WebhookDelivery.objects.select_related("publishing__project").filter(pk=delivery_id).first()
    if delivery is None:
        logger.error("webhook delivery %s not found; message dead-lettered", delivery_id)
        raise PermanentJobError(f"Webhook delivery {delivery_id} does not exist.", code="DELIVERY_NOT_FOUND")
    if delivery.state != State.PENDING:
        logger.info("webhook delivery %s already %s; message skipped", delivery_id, delivery.state)
        return
    if delivery.message_id != message_id:
        logger.info(
            "webhook delivery %s belongs to message %s; stale message skipped",
            delivery_id,
            delivery.message_id or "(none)",
        )
        return
    with job_context(publishing_id=str(delivery.publishing_id)):
        outcome = _attempt(delivery)
        error = outcome.error
        if error is None:
            if _record(delivery, message_id, outcome, state=State.DELIVERED):
                logger.info(
                    "webhook delivery %s (%s) delivered: %s", delivery_id, delivery.event, outcome.status
                )
            return
        if error.transient and retries < max_retries:
            if _record(delivery, message_id, outcome, state=State.PENDING):
                logger.warning(
                    "webhook delivery %s failed (%s); will retry (%d of %d)",
                    delivery_id,
                    error.detail,
                    retries + 1,
                    max_retries,
                )
        elif _record(delivery, message_id, outcome, state=State.FAILED):
            logger.error("webhook delivery %s failed for good: %s", delivery_id, error.detail)
        raise error


class _Outcome(NamedTuple):
    """What one try came to: whether a request went out, the answer's status, the error if it failed."""

    posted: bool
    status: int | None = None
    error: JobError | None = None


def _attempt(delivery: WebhookDelivery) -> _Outcome:
    """POST the delivery once, unless the project or the host policy forbids it."""
    project = delivery.publishing.project
    if project is None:
        deleted = PermanentJobError("the project was deleted; nothing to sign with", code="PROJECT_DELETED")
        return _Outcome(posted=False, error=deleted)
    safe_url = redact_credentials(delivery.url)
    allow_private = settings.PUBLISHING_ALLOW_PRIVATE_TARGETS
    try:
        validate_webhook_url(delivery.url, allow_private=allow_private)
        # Now with DNS: the name may point somewhere else than when it was saved.
        check_host(
            urlsplit(delivery.url).hostname or "", allow_private=allow_private, code="WEBHOOK_NOT_ALLOWED"
        )
    except JobError as exc:
        return _Outcome(posted=False, error=exc)
    body = delivery.body.encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
    }
    # Without a secret there is nothing to sign with: no signature rather than a meaningless one.
    if project.webhook_secret:
        headers[SIGNATURE_HEADER] = sign(body, project.webhook_secret)
    try:
        # A success's body is not read: a receiver trickling it must not turn a delivery into a retry.
        answer = post(
            delivery.url,
            data=body,
            headers=headers,
            timeout=settings.PUBLISHING_WEBHOOK_TIMEOUT,
            allow_private=allow_private,
            read_limit=RESPONSE_READ_LIMIT,
            label=safe_url,
            code_prefix="WEBHOOK",
            read_success=False,
        )
    except JobError as exc:
        # Only a refusal by the host policy, where the connection opens, sent nothing.
        return _Outcome(posted=exc.code != "WEBHOOK_NOT_ALLOWED", error=exc)
    except TimeLimitExceeded:
        # The receiver trickled its answer past the actor's time limit.
        slow = TransientJobError(f"{safe_url} answered too slowly", code="WEBHOOK_UNAVAILABLE")
        return _Outcome(posted=True, error=slow)
    return _Outcome(
        posted=True, status=answer.status, error=answer_error(answer, label=safe_url, code_prefix="WEBHOOK")
    )


def _record(delivery: WebhookDelivery, message_id: str, outcome: _Outcome, *, state: str) -> bool:
    """Write one try's outcome (a POST counts only if one went out), if this message still owns the row;
    whether it did."""
    now = timezone.now()
    changes: dict[str, Any] = {
        "state": state,
        "response_status": outcome.status,
        "last_error": outcome.error.detail if outcome.error else "",
        "updated_at": now,
    }
    if outcome.posted:
        changes["attempts"] = F("attempts") + 1
    if state == State.DELIVERED:
        changes["delivered_at"] = now
    moved = WebhookDelivery.objects.filter(pk=delivery.pk, state=State.PENDING, message_id=message_id).update(
        **changes
    )
    if not moved:
        logger.info("webhook delivery %s was resent meanwhile; this outcome is not recorded", delivery.pk)
    return bool(moved)


# --- Resending and reconciling ----------------------------------------------------------------


def delivery_resend(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a failed (or stuck pending) delivery again, to the project's current webhook URL.

    It gets a new message and a fresh retry budget; an older message of it is
    skipped from now on. PublishingConflict when it was delivered, the project
    has no webhook any more, or it changed meanwhile; BrokerUnavailable leaves
    it as it was.
    """
    if delivery.state == State.DELIVERED:
        raise PublishingConflict("This webhook delivery was delivered already; it is not sent again.")
    project = delivery.publishing.project
    if project is None or not project.webhook_url:
        raise PublishingConflict("The project has no webhook URL any more.")
    broker.ensure_available()
    message = _message(delivery.pk)
    previous = {"state": delivery.state, "message_id": delivery.message_id, "url": delivery.url}
    # Guarded on the message the caller saw: a concurrent resend or a finishing run wins.
    moved = WebhookDelivery.objects.filter(
        pk=delivery.pk, state__in=(State.FAILED, State.PENDING), message_id=delivery.message_id
    ).update(
        state=State.PENDING, message_id=message.message_id, url=project.webhook_url, updated_at=timezone.now()
    )
    if not moved:
        raise PublishingConflict("The webhook delivery changed meanwhile; reload it.")
    try:
        broker.enqueue(message)
    except BaseException:
        # As if the request never came: no message exists for it.
        WebhookDelivery.objects.filter(pk=delivery.pk, message_id=message.message_id).update(**previous)
        raise
    delivery.refresh_from_db()
    logger.info("webhook delivery %s resent to %s", delivery.pk, redact_credentials(delivery.url))
    return delivery


def deliveries_reconcile() -> int:
    """Send again the pending deliveries without a message; returns how many. Safe to run anywhere, any time.

    - pending whose enqueue failed (no message id): sent now;
    - pending, untouched for PUBLISHING_RECONCILE_GRACE, whose message the
      broker no longer holds (Redis only: other brokers cannot be inspected,
      so those are left to their own retries): sent again.
    """
    grace = timezone.now() - timedelta(seconds=settings.PUBLISHING_RECONCILE_GRACE)
    sent = 0
    pending = WebhookDelivery.objects.filter(state=State.PENDING)
    try:
        for delivery_id in pending.filter(message_id="").values_list("pk", flat=True):
            sent += _send_again(delivery_id, old_message_id="")
        stale = list(
            pending.filter(updated_at__lt=grace).exclude(message_id="").values_list("pk", "message_id")
        )
        live = broker.live_message_ids(settings.PUBLISHING_WEBHOOK_QUEUE) if stale else None
        for delivery_id, message_id in stale:
            if live is not None and message_id not in live:
                sent += _send_again(delivery_id, old_message_id=message_id)
    except BrokerUnavailable:
        # The rest waits for the next pass, rather than each row failing fast in turn.
        logger.info("broker unavailable; webhook deliveries are reconciled on a later pass")
    if sent:
        logger.warning("reconciled: %d webhook deliveries sent again", sent)
    return sent


def _send_again(delivery_id: uuid.UUID, *, old_message_id: str) -> int:
    """1 if the delivery got a new message in the broker, 0 if it moved on meanwhile; or BrokerUnavailable."""
    message = _message(delivery_id)
    moved = WebhookDelivery.objects.filter(
        pk=delivery_id, state=State.PENDING, message_id=old_message_id
    ).update(message_id=message.message_id, updated_at=timezone.now())
    if not moved:
        return 0
    send(WebhookDelivery, delivery_id, message)
    return 1
