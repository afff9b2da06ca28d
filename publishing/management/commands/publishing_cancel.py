"""`manage.py publishing_cancel ID`: cancel a queued or building publishing, as the API's cancel does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from publishing.management.cli import EXIT_CODES_HELP, PublishingCommand, find_publishing
from publishing.services.publishings import publishing_cancel


class Command(PublishingCommand):
    help = (
        "Cancel publishing ID (queued or building: a running build is stopped); refused once it submits "
        "or has ended. " + EXIT_CODES_HELP
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_publishing_arguments(parser)

    def handle(self, *args: Any, publishing: str, user: str | None, **options: Any) -> None:
        found, by = find_publishing(publishing, user)
        was = found.status
        cancelled = publishing_cancel(publishing=found, by=by)
        self.stdout.write(f"Publishing {cancelled.pk} is {cancelled.status} (it was {was}).")
