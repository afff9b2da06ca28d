"""What the workers do around the jobs: deferrals, leases, requeues, reconciliation, sweeps and pruning."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from publishing import broker
from publishing.exceptions import BrokerUnavailable, InvalidTransition
from publishing.models import Attempt, LogLine, Publishing, WaitReason
from publishing.pipeline import sandbox, sandbox_uids
from publishing.pipeline.workspace import sweep as pipeline_workspace_sweep
from publishing.services.attempts import finish_attempt
from publishing.services.log import store
from publishing.services.queueing import enqueue

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome


def publishing_defer(*, publishing_id: str | None, delay_ms: int) -> None:
    """Record when a rate-limited publishing is expected to start, in the row and in its log."""
    if not publishing_id:
        return
    attempts = Publishing.objects.filter(pk=publishing_id).values_list("attempts", flat=True).first()
    if attempts is None:
        return
    now = timezone.now()
    until = now + timedelta(milliseconds=delay_ms)
    text = f"waiting for a start under the rate limit, until about {until:%H:%M:%S} UTC"
    store(
        publishing_id,
        LogLine.event(publishing_id, attempts, text),
        fence=Q(status=Status.QUEUED),
        # updated_at too: the reconciler leaves just-deferred rows alone while their message moves to
        # the delay queue.
        changes={"not_before": until, "wait_reason": WaitReason.RATE_LIMIT, "updated_at": now},
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
        enqueue(
            publishing,
            sources=(Status.BUILDING, Status.SUBMITTING),
            attempt=attempt,
            retries=retries,
            error_message=reason,
            event=f"attempt {attempt} stopped: {reason}",
        )
    except InvalidTransition:
        return False
    except BrokerUnavailable:
        # Queued without a message: the next reconciliation sends one.
        logger.warning("publishing %s requeued but its message could not be sent yet", publishing_id)
    finish_attempt(publishing_id, attempt, Outcome.LOST, error_message=reason)
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

    - `pending` for longer than the grace period (an older release's web
      process died between recording and queueing): queued now;
    - `building`/`submitting` whose lease ran out (the worker died): requeued;
    - `queued` for longer than the grace period with no message in the
      broker (for example Redis lost its data): sent again.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.PUBLISHING_RECONCILE_GRACE)
    report = Reconciliation()
    for publishing in Publishing.objects.filter(status=Status.PENDING, created_at__lt=grace):
        with contextlib.suppress(InvalidTransition, BrokerUnavailable):
            enqueue(
                publishing,
                sources=(Status.PENDING,),
                event="queued by the reconciler: the request that made it stopped before queueing it",
            )
            report.sent_pending += 1
    lease_expired = now - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT)
    lost = Publishing.objects.filter(status__in=(Status.BUILDING, Status.SUBMITTING)).filter(
        Q(heartbeat_at__lt=lease_expired) | Q(heartbeat_at__isnull=True, started_at__lt=lease_expired)
    )
    for publishing in lost:
        if publishing_requeue(
            publishing_id=str(publishing.pk),
            reason="Its worker stopped answering; requeued.",
            retries=publishing.retries,
            attempt=publishing.attempts,
        ):
            report.requeued_lost += 1
    for publishing in Publishing.objects.filter(status=Status.QUEUED, message_id=""):
        # Queued, but its enqueue failed (a requeue or retry during an outage).
        with contextlib.suppress(InvalidTransition, BrokerUnavailable):
            _resend(publishing, "its message could not be sent before")
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
                _resend(publishing, "its message was no longer in the broker")
                report.resent_queued += 1
    if report.sent_pending or report.requeued_lost or report.resent_queued:
        logger.warning("reconciled: %s", report)
    return report


def _resend(publishing: Publishing, why: str) -> None:
    enqueue(
        publishing,
        sources=(Status.QUEUED,),
        attempt=publishing.attempts,
        retries=publishing.retries,
        event=f"message sent again by the reconciler: {why}",
    )


def builds_sweep() -> tuple[int, int]:
    """Remove the workspaces, and kill the processes, of builds whose worker died on this host.

    Safe to run anywhere, any time, in parallel: a live build's workspace and uid are locked.
    Returns (workspaces removed, processes killed).
    """
    removed = pipeline_workspace_sweep()
    killed = 0
    if os.geteuid() == 0:
        killed = sandbox_uids.sweep_uids(sandbox.SandboxPolicy.from_settings().uids)
        if killed:
            logger.warning("killed %d process(es) of builds whose worker died", killed)
    return len(removed), killed


def job_records_prune() -> int:
    """Keep the newest PUBLISHING_RETENTION_FAILED dead letters; returns how many went (0 without Redis).

    Dead letters are the only job records beside the publishings, whose attempts record every
    run: publishings are business records and are never pruned, and a completed job leaves no job
    record.
    """
    with contextlib.suppress(BrokerUnavailable):
        return broker.trim_dead_letters(keep=settings.PUBLISHING_RETENTION_FAILED)
    return 0
