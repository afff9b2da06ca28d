"""`manage.py publishing_retry ID [--wait | --follow]`: queue a failed or cancelled publishing again."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from publishing import selectors
from publishing.management.cli import (
    EXIT_CODES_HELP,
    PublishingCommand,
    ensure_a_worker_listens,
    find_publishing,
)
from publishing.management.follow import follow_if_asked
from publishing.services.publishings import publishing_retry


class Command(PublishingCommand):
    help = (
        "Queue publishing ID again (failed or cancelled), with the settings it was initiated with; with "
        "--wait or --follow, follow it as publish does. " + EXIT_CODES_HELP
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_publishing_arguments(parser)
        self.add_queueing_arguments(parser)

    def handle(self, *args: Any, publishing: str, user: str | None, **options: Any) -> None:
        found, by = find_publishing(publishing, user)
        ensure_a_worker_listens(options)
        # Only what this retry logs is followed, not the attempts before it.
        since = selectors.log_end(found.pk)
        retried = publishing_retry(publishing=found, by=by)
        console = self.console()
        # What the retry did: the worker may have taken it up already (the follower says so next).
        console.print(f"Publishing {retried.pk} is queued again.", markup=False)
        follow_if_asked(console, retried, options, since=since)
