"""What a publishing was built from: the commit each attempt checked out, recorded after its checkout."""

from __future__ import annotations

import logging

from publishing.models import Attempt, Publishing
from publishing.pipeline import Commit
from publishing.services.attempts import AttemptLog

logger = logging.getLogger(__name__)


def record_commit(publishing: Publishing, log: AttemptLog, commit: Commit) -> None:
    """Write `commit` on the running attempt and its publishing, and say it in the log.

    The attempt's own row always; the publishing's with the log's next write, which holds the
    attempt's fence (StaleAttempt once another run owns the publishing): a straggler never
    overwrites what a newer attempt checked out.
    """
    values = {"commit_sha": commit.sha, "commit_subject": commit.subject, "commit_author": commit.author}
    Attempt.objects.filter(publishing_id=publishing.pk, number=log.attempt).update(**values)
    log.event(f"checkout -> {commit.short} {commit.subject}")
    log.flush(commit_sha=commit.sha, commit_subject=commit.subject, commit_author=commit.author)
    logger.info("publishing %s attempt %d checked out %s", publishing.pk, log.attempt, commit.sha)
