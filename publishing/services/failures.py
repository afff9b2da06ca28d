"""How a failed attempt is recorded: the publishing failed, or queued again for a retry after a backoff,
and its attempt closed, in one transaction."""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db import utils as db_utils
from django.utils import timezone
from dramatiq.common import compute_backoff

from publishing import metrics
from publishing.exceptions import InvalidTransition, JobError, StaleAttempt
from publishing.models import Attempt, Publishing, WaitReason
from publishing.services.attempts import AttemptLog, finish_attempt, outcome_of_stopped

logger = logging.getLogger(__name__)

Status = Publishing.Status
Outcome = Attempt.Outcome


def _failure_record(
    publishing: Publishing, attempt: int, error: JobError, *, retries: int, max_retries: int
) -> tuple[str, str, str, dict[str, Any]]:
    """What a failed attempt leaves: (status, error message, log event, other changes); a retry's delay
    is set on `error` too, for Dramatiq."""
    if not (error.transient and retries < max_retries):
        logger.error(
            "publishing %s failed at attempt %d (%s: %s)", publishing.pk, attempt, error.code, error.detail
        )
        metrics.attempt_finished("failed")
        return Status.FAILED, error.detail, f"attempt {attempt} failed ({error.code}): {error.detail}", {}
    logger.warning(
        "publishing %s attempt %d failed (%s: %s); will retry",
        publishing.pk,
        attempt,
        error.code,
        error.detail,
    )
    metrics.attempt_finished("retry")
    error.retry_in_ms = retry_delay_ms(retries)
    at = timezone.now() + timedelta(milliseconds=error.retry_in_ms)
    event = (
        f"attempt {attempt} failed ({error.code}): {error.detail} "
        f"Retry {retries + 1} of {max_retries} at {at:%H:%M:%S} UTC."
    )
    changes = {"not_before": at, "wait_reason": WaitReason.RETRY_BACKOFF, "retries": retries + 1}
    return Status.QUEUED, f"Attempt {attempt} failed: {error.detail} Retrying.", event, changes


def _record_end(
    publishing: Publishing,
    log: AttemptLog,
    error: JobError,
    target: str,
    message: str,
    event: str,
    changes: dict[str, Any],
) -> None:
    """The failed attempt's end: the publishing moved to `target` (failed, or queued for a retry), then
    the attempt closed; InvalidTransition when the publishing no longer belongs to it."""
    Publishing.objects.transition(
        publishing.pk,
        target,
        attempt=log.attempt,
        message_id=log.message_id,
        # Only while this attempt still runs it: a cancel keeps the attempt and message, and
        # cancelled -> queued is a retry's move, so without this a failure recorded as the owner
        # cancels would queue the publishing again and run it (test_runner_failures).
        only_from=(Status.BUILDING, Status.SUBMITTING),
        error_code=error.code,
        error_message=message,
        event=event,
        **changes,
    )
    outcome = Outcome.RETRYING if target == Status.QUEUED else Outcome.FAILED
    finish_attempt(
        publishing.pk, log.attempt, outcome, error_code=error.code, error_message=error.detail, log=log
    )


def record_failure(
    publishing: Publishing, log: AttemptLog, error: JobError, *, retries: int, max_retries: int
) -> None:
    attempt = log.attempt
    target, message, event, changes = _failure_record(
        publishing, attempt, error, retries=retries, max_retries=max_retries
    )
    try:
        with contextlib.suppress(StaleAttempt):
            # The failed step's last output, before the event that says how the attempt ended.
            log.flush()
        # One transaction: no reader sees the publishing ended while its attempt still runs.
        with transaction.atomic():
            _record_end(publishing, log, error, target, message, event, changes)
    except InvalidTransition:
        logger.info(
            "publishing %s changed meanwhile; failure of attempt %d not recorded", publishing.pk, attempt
        )
        finish_attempt(
            publishing.pk,
            attempt,
            outcome_of_stopped(publishing.pk),
            error_code=error.code,
            error_message=error.detail,
            log=log,
        )
    except (db_utils.OperationalError, db_utils.InterfaceError) as exc:
        # The database is away: the publishing keeps its running status until the retried message (or,
        # past its lease, the reconciler) takes it up again.
        logger.warning(
            "publishing %s: could not record the failure of attempt %d, the database is unavailable (%s)",
            publishing.pk,
            attempt,
            exc,
        )
    except db_utils.Error:
        logger.exception("publishing %s: could not record the failure of attempt %d", publishing.pk, attempt)


def retry_delay_ms(retries: int) -> int:
    """How long a transient failure waits before try `retries + 2`: Dramatiq's backoff, with jitter."""
    _, delay = compute_backoff(
        retries, factor=settings.PUBLISHING_MIN_BACKOFF_MS, max_backoff=settings.PUBLISHING_MAX_BACKOFF_MS
    )
    return int(delay)
