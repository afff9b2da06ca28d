"""The Dramatiq actor: an adapter from a message to `services.publishing_run`."""

from __future__ import annotations

import logging

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.shutdown import Shutdown
from dramatiq.middleware.time_limit import TimeLimitExceeded
from dramatiq_abort import Abort

from publishing import services
from publishing.exceptions import PermanentJobError
from publishing.log_context import job_context

logger = logging.getLogger(__name__)


@dramatiq.actor(
    queue_name=settings.PUBLISHING_QUEUE,
    max_retries=settings.PUBLISHING_MAX_RETRIES,
    min_backoff=settings.PUBLISHING_MIN_BACKOFF_MS,
    max_backoff=settings.PUBLISHING_MAX_BACKOFF_MS,
    time_limit=settings.PUBLISHING_TIME_LIMIT_MS,
    # Not retried: they fail the same way every time.
    throws=(PermanentJobError, TimeLimitExceeded),
)
def build_and_submit(publishing_id: str, project_id: str, user_id: str) -> None:
    """Build and submit one publishing. Safe to run more than once for the same id."""
    message = CurrentMessage.get_current_message()
    message_id = message.message_id if message is not None else ""
    retries = int(message.options.get("retries", 0)) if message is not None else 0
    with job_context(
        job_id=message_id,
        message_id=message_id,
        publishing_id=publishing_id,
        project_id=project_id,
        user_id=user_id,
    ):
        try:
            services.publishing_run(
                publishing_id=publishing_id,
                message_id=message_id,
                retries=retries,
                max_retries=build_and_submit.options["max_retries"],
            )
        except Abort:
            # Cancelled: the publishing says so already; nothing to retry.
            logger.info("publishing %s aborted by its cancellation", publishing_id)
        except Shutdown:
            # Cut off at the shutdown deadline: already requeued with a new message.
            logger.info("publishing %s interrupted by the worker shutdown", publishing_id)
