"""What a publishing was built from: the commit each attempt checked out, recorded after its checkout."""

from __future__ import annotations

import logging

from django.utils import timezone

from publishing.exceptions import StaleAttempt
from publishing.models import Attempt, Publishing
from publishing.pipeline import Commit
from publishing.services.attempts import AttemptLog

logger = logging.getLogger(__name__)


def record_commit(publishing: Publishing, log: AttemptLog, commit: Commit) -> None:
    """Write `commit` on the running attempt and its publishing, and say it in the log.

    The attempt's own row always; the publishing's only while this attempt still owns it (StaleAttempt
    otherwise), as every write of a run: a straggler never overwrites what a newer attempt checked out.
    """
    values = {"commit_sha": commit.sha, "commit_subject": commit.subject, "commit_author": commit.author}
    Attempt.objects.filter(publishing_id=publishing.pk, number=log.attempt).update(**values)
    moved = Publishing.objects.filter(
        pk=publishing.pk,
        attempts=log.attempt,
        message_id=log.message_id,
        status=Publishing.Status.BUILDING,
    ).update(updated_at=timezone.now(), **values)
    if not moved:
        raise StaleAttempt(f"publishing {publishing.pk} no longer belongs to attempt {log.attempt}")
    logger.info("publishing %s attempt %d checked out %s", publishing.pk, log.attempt, commit.sha)
    log.append(f"checkout -> {commit.short} {commit.subject}\n")
