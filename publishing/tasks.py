"""The Dramatiq actors: adapters from a message to `runner.publishing_run` and `webhooks.delivery_run`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dramatiq
from django.conf import settings
from django.db import utils as db_utils
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.shutdown import Shutdown
from dramatiq.middleware.time_limit import TimeLimitExceeded
from dramatiq_abort import Abort

from publishing import jobs
from publishing.exceptions import PermanentJobError, TransientJobError
from publishing.log_context import job_context
from publishing.services import runner, webhooks
from publishing.worker.validation import LogIdStr, UuidStr

logger = logging.getLogger(__name__)


def _current_message() -> tuple[str, int]:
    """The running message's id and how many times it was retried ("", 0 outside a worker)."""
    message = CurrentMessage.get_current_message()
    if message is None:
        return "", 0
    return message.message_id, int(message.options.get("retries", 0))


@contextlib.contextmanager
def _job(**labels: str) -> Iterator[tuple[str, int]]:
    """The running message's id and retries, with the job's ids on every log line it writes.

    A TransientJobError is already recorded and logged with its reason by the service that raises it:
    it becomes Retry, which Dramatiq retries the same way, but without a traceback at ERROR each time
    for an outage that is expected to pass.
    """
    message_id, retries = _current_message()
    with job_context(job_id=message_id, message_id=message_id, **labels):
        try:
            yield message_id, retries
        except TransientJobError as exc:
            raise dramatiq.Retry(exc.detail, delay=exc.retry_in_ms) from exc


@dramatiq.actor(
    actor_name=jobs.BUILD_ACTOR,
    queue_name=jobs.build_queue(),
    max_retries=settings.PUBLISHING_MAX_RETRIES,
    min_backoff=settings.PUBLISHING_MIN_BACKOFF_MS,
    max_backoff=settings.PUBLISHING_MAX_BACKOFF_MS,
    time_limit=settings.PUBLISHING_TIME_LIMIT_MS,
    # Not retried: they fail the same way every time.
    throws=(PermanentJobError, TimeLimitExceeded),
    # Its starts count against the global rate limit (publishing.worker.rate_limit).
    rate_limited=True,
    # Its publishing's lease is kept while it runs and it is cut off at the shutdown deadline
    # (publishing.worker.leases, publishing.worker.shutdown).
    leased=True,
)
def build_and_submit(publishing_id: UuidStr, project_id: LogIdStr, user_id: LogIdStr) -> None:
    """Build and submit one publishing. Safe to run more than once for the same id.

    Only `publishing_id` is looked up. The other two label the log lines, and
    are not UUIDs for every message: user ids are integers, and either one is
    "None" once the project or the user was deleted. A message for a
    publishing that no longer exists is acked and dropped with one INFO line.
    """
    with _job(publishing_id=publishing_id, project_id=project_id, user_id=user_id) as (message_id, retries):
        try:
            runner.publishing_run(
                publishing_id=publishing_id,
                message_id=message_id,
                retries=retries,
                max_retries=build_and_submit.options["max_retries"],
            )
        except (db_utils.OperationalError, db_utils.InterfaceError) as exc:
            # The database went away before the attempt began (an attempt's own outage is a
            # TransientJobError above): nothing was written, the message comes back later.
            logger.warning("publishing %s: database unavailable (%s); will retry", publishing_id, exc)
            raise dramatiq.Retry(str(exc)) from exc
        except Abort:
            # Cancelled: the publishing says so already; nothing to retry.
            logger.info("publishing %s aborted by its cancellation", publishing_id)
        except Shutdown:
            # Cut off at the shutdown deadline: already requeued with a new message.
            logger.info("publishing %s interrupted by the worker shutdown", publishing_id)


@dramatiq.actor(
    actor_name=jobs.WEBHOOK_ACTOR,
    queue_name=jobs.webhook_queue(),
    max_retries=settings.PUBLISHING_WEBHOOK_MAX_RETRIES,
    min_backoff=settings.PUBLISHING_WEBHOOK_MIN_BACKOFF_MS,
    max_backoff=settings.PUBLISHING_WEBHOOK_MAX_BACKOFF_MS,
    # requests' timeouts bound each wait on the socket, not the whole
    # exchange: a receiver trickling its answer is cut off here, and retried.
    time_limit=(4 * settings.PUBLISHING_WEBHOOK_TIMEOUT + 10) * 1000,
    # Worker threads are shared: of the messages a worker has fetched, a
    # delivery (seconds) goes before a build (minutes).
    priority=-10,
    # Nothing cancels a delivery: spares the abort backend a lookup per message.
    abortable=False,
    # Refused by the receiver or by the host policy: the same every time.
    throws=(PermanentJobError,),
)
def deliver_webhook(delivery_id: UuidStr) -> None:
    """POST one webhook delivery. Safe to run more than once for the same id.

    A missing delivery raises DELIVERY_NOT_FOUND (in `throws`): dead-lettered, never retried.
    """
    with _job() as (message_id, retries):
        webhooks.delivery_run(
            delivery_id=delivery_id,
            message_id=message_id,
            retries=retries,
            max_retries=deliver_webhook.options["max_retries"],
        )
