"""`manage.py publishing_status`: the queue overview as tables (what GET /metrics and the admin show)."""

from __future__ import annotations

from typing import IO, Any, cast

from django.conf import settings
from django.core.management.base import BaseCommand
from rich.console import Console
from rich.table import Table
from rich.text import Text

from publishing import selectors
from publishing.management.cli import database_label
from publishing.redaction import redacted_url

RECENT_FAILURES = 10
# The exit code when the database or the broker does not answer.
EXIT_DOWN = 1


class Command(BaseCommand):
    help = (
        "Show the publishing queue now: publishings by status, the broker's queue, live workers, the "
        "rate-limit window and the latest failures; names the database and the broker it checked (no "
        f"password) and says which is down. Exit 0 when both answer, {EXIT_DOWN} when either does not."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        overview = selectors.system_overview()
        # OutputWrapper passes everything else through to the real stream.
        console = Console(file=cast("IO[str]", self.stdout), width=120)

        health = Table(title="Dependencies", title_justify="left")
        health.add_column("dependency")
        health.add_column("state")
        health.add_column("checked")
        checked = (
            ("database", overview.database_ok, database_label()),
            ("broker", overview.broker_ok, redacted_url(settings.BROKER_URL)),
        )
        for name, ok, where in checked:
            health.add_row(name, "[green]ok[/]" if ok else "[red]unavailable[/]", Text(where))
        console.print(health)
        self._tables(console, overview)
        down = [f"the {name} ({where})" for name, ok, where in checked if not ok]
        if down:
            self.stderr.write(f"{' and '.join(down).capitalize()} did not answer.")
            raise SystemExit(EXIT_DOWN)

    @staticmethod
    def _tables(console: Console, overview: selectors.SystemOverview) -> None:
        if overview.database_ok:
            statuses = Table(title="Publishings", title_justify="left")
            statuses.add_column("status")
            statuses.add_column("count", justify="right")
            for status, count in overview.publishings.items():
                statuses.add_row(status, str(count))
            statuses.add_row("oldest queued", f"{overview.oldest_queued_seconds:.0f} s")
            console.print(statuses)

        queue = Table(title="Queue", title_justify="left")
        for column in ("queue", "ready", "delayed", "dead-lettered", "workers alive", "rate-limit window"):
            queue.add_column(column, justify="left" if column == "queue" else "right")
        stats = overview.queue
        rate = overview.rate_limit
        window = f"{rate.used}/{rate.limit} per {rate.window_seconds:g}s" if rate else "off or unknown"
        queue.add_row(
            stats.name if stats else ("(broker unavailable)" if not overview.broker_ok else "(not readable)"),
            _count(stats.ready if stats else None),
            _count(stats.delayed if stats else None),
            _count(stats.dead if stats else None),
            _count(len(overview.workers) if overview.workers is not None else None),
            window,
        )
        console.print(queue)
        if overview.workers:
            console.print("workers: " + ", ".join(overview.workers))

        if overview.database_ok:
            failures = Table(title=f"Latest {RECENT_FAILURES} failures", title_justify="left")
            for column in ("finished", "publishing", "project", "attempts", "error"):
                failures.add_column(column)
            for publishing in selectors.recent_failures(RECENT_FAILURES):
                failures.add_row(
                    f"{publishing.finished_at:%Y-%m-%d %H:%M:%S}" if publishing.finished_at else "",
                    str(publishing.pk),
                    publishing.project.slug if publishing.project else "(deleted)",
                    str(publishing.attempts),
                    f"{publishing.error_code}: {publishing.error_message}"[:80],
                )
            console.print(failures)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)
