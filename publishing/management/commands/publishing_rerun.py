"""`manage.py publishing_rerun ID [--wait | --follow]`: a new publishing of the commit a finished one had."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from publishing.management.cli import (
    EXIT_CODES_HELP,
    PublishingCommand,
    ensure_a_worker_listens,
    find_publishing,
)
from publishing.management.follow import follow_if_asked
from publishing.services.publishings import publishing_rerun


class Command(PublishingCommand):
    help = (
        "Queue a new publishing of finished publishing ID's project at the commit it checked out, with the "
        "project's settings of now (a rollback, for an earlier published one); with --wait or --follow, "
        "follow the new one as publish does. " + EXIT_CODES_HELP
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_publishing_arguments(parser, "the finished publishing's id")
        self.add_queueing_arguments(parser)

    def handle(self, *args: Any, publishing: str, user: str | None, **options: Any) -> None:
        found, by = find_publishing(publishing, user)
        ensure_a_worker_listens(options)
        rerun = publishing_rerun(publishing=found, by=by)
        at = f" at {rerun.requested_commit}" if rerun.requested_commit else ""
        console = self.console()
        console.print(f"Re-run of {found.pk}: publishing {rerun.pk}{at} is {rerun.status}.", markup=False)
        follow_if_asked(console, rerun, options)
