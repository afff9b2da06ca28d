"""`manage.py publish PROJECT [--wait]`: queue a publishing from the shell, and optionally follow it."""

from __future__ import annotations

import argparse
import time
import uuid
from typing import IO, Any, cast

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from publishing.exceptions import PublishingError
from publishing.models import Project, Publishing
from publishing.services.publishings import publishing_initiate

# Exit codes: 0 published (or queued, without --wait); these otherwise.
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_TIMEOUT = 3
EXIT_INTERRUPTED = 130


class Command(BaseCommand):
    help = (
        "Queue a publishing of PROJECT (its id, or its slug) as its owner or --user. With --wait, follow it "
        f"with a progress bar; exit 0 once published, {EXIT_FAILED} if it failed, {EXIT_CANCELLED} if "
        f"cancelled, {EXIT_TIMEOUT} if --timeout passed first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="the project's id, or its slug")
        parser.add_argument("--user", help="request it as this user (default: the project's owner)")
        parser.add_argument(
            "--commit", default="", help="a full commit id or a tag of the project's ref (default: its head)"
        )
        parser.add_argument("--wait", action="store_true", help="follow it until it ends")
        parser.add_argument(
            "--timeout", type=float, default=None, help="with --wait: give up after S seconds"
        )
        parser.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)

    def handle(self, *args: Any, project: str, user: str | None, wait: bool, **options: Any) -> None:
        target = _find_project(project, user)
        requester = _find_user(user) if user else target.owner
        try:
            publishing = publishing_initiate(
                user=requester, project_id=target.pk, commit=options["commit"], via="cli"
            )
        except PublishingError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from exc
        except ValidationError as exc:
            raise CommandError(f"VALIDATION_ERROR: {' '.join(exc.messages)}") from exc
        self.stdout.write(f"Publishing {publishing.pk} of {target.slug} is {publishing.status}.")
        if wait:
            code = self._follow(publishing, timeout=options["timeout"], poll=options["poll"])
            if code:
                raise SystemExit(code)

    def _follow(self, publishing: Publishing, *, timeout: float | None, poll: float) -> int:
        # OutputWrapper passes everything else through to the real stream.
        console = Console(file=cast("IO[str]", self.stdout), soft_wrap=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        columns = (
            TextColumn("{task.description:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=console, transient=False) as progress:
                bar = progress.add_task(publishing.status, total=100, completed=publishing.progress)
                while not publishing.is_terminal:
                    if deadline is not None and time.monotonic() > deadline:
                        console.print(f"Still {publishing.status} after {timeout:g}s; it goes on without us.")
                        return EXIT_TIMEOUT
                    time.sleep(poll)
                    publishing.refresh_from_db()
                    progress.update(bar, description=publishing.status, completed=publishing.progress)
        except KeyboardInterrupt:
            console.print(
                f"Stopped following: publishing {publishing.pk} is {publishing.status} and goes on."
            )
            return EXIT_INTERRUPTED
        return self._report(console, publishing)

    @staticmethod
    def _report(console: Console, publishing: Publishing) -> int:
        attempts = f"{publishing.attempts} attempt{'s' if publishing.attempts != 1 else ''}"
        if publishing.status == Publishing.Status.PUBLISHED:
            console.print(f"[green]published[/] after {attempts}: {publishing.artifact_uri}")
            console.print(f"sha256 {publishing.artifact_sha256}")
            return 0
        reason = f"{publishing.error_code}: {publishing.error_message}" if publishing.error_code else ""
        console.print(f"[red]{publishing.status}[/] after {attempts}. {reason}".rstrip())
        return EXIT_FAILED if publishing.status == Publishing.Status.FAILED else EXIT_CANCELLED


def _find_user(username: str) -> User:
    found = User.objects.filter(username=username).first()
    if found is None:
        raise CommandError(f"No user {username!r}.")
    return found


def _find_project(key: str, username: str | None) -> Project:
    try:
        by_id = Project.objects.filter(pk=uuid.UUID(key))
    except ValueError:
        by_id = Project.objects.none()
    candidates = list(by_id.select_related("owner")) or list(
        Project.objects.filter(slug=key).select_related("owner").order_by("owner__username")
    )
    if username and len(candidates) > 1:
        candidates = [p for p in candidates if p.owner.username == username]
    if not candidates:
        raise CommandError(f"No project {key!r} (give its id or its slug).")
    if len(candidates) > 1:
        owners = ", ".join(p.owner.username for p in candidates)
        raise CommandError(f"{len(candidates)} projects are called {key!r} (owners: {owners}); pass --user.")
    return candidates[0]
