"""`manage.py publish PROJECT [--commit SHA] [--wait | --follow]`: queue a publishing from the shell, and
optionally follow it to its end."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from publishing.management.cli import (
    EXIT_CODES_HELP,
    PublishingCommand,
    active,
    ensure_a_worker_listens,
    find_project,
    find_user,
)
from publishing.management.follow import follow_if_asked
from publishing.services.publishings import publishing_initiate


class Command(PublishingCommand):
    help = (
        "Queue a publishing of PROJECT (its id, or its slug) as its owner or --user; with --commit, of that "
        "commit (a rollback, when it was published before). Refuses when no worker is alive on the broker "
        "(--no-worker-check queues anyway). With --wait, follow it on one line that redraws (a line per "
        "change when not a terminal); with --follow, print its log as it comes too. " + EXIT_CODES_HELP
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="the project's id, or its slug")
        self.add_user_argument(parser, "the project's owner")
        parser.add_argument(
            "--commit", default="", help="a full commit id or a tag of the project's ref (default: its head)"
        )
        self.add_queueing_arguments(parser)

    def handle(self, *args: Any, project: str, user: str | None, **options: Any) -> None:
        target = find_project(project, user)
        requester = find_user(user) if user else active(target.owner)
        ensure_a_worker_listens(options)
        publishing = publishing_initiate(
            user=requester, project_id=target.pk, commit=options["commit"], via="cli"
        )
        at = f" at {publishing.requested_commit}" if publishing.requested_commit else ""
        console = self.console()
        console.print(
            f"Publishing {publishing.pk} of {target.slug}{at} is {publishing.status}.", markup=False
        )
        follow_if_asked(console, publishing, options)
