"""`manage.py publishing_logs ID [--follow] [--step S]`: a publishing's log as text, or followed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from rich.text import Text

from publishing import selectors
from publishing.management.cli import EXIT_CODES_HELP, PublishingCommand, find_publishing
from publishing.management.follow import Follower, Following
from publishing.models import LogLine
from publishing.redaction import redact_credentials


class Command(PublishingCommand):
    help = (
        "Print publishing ID's log, one line each: its time (UTC), its step and its text (credentials in "
        "URLs as ***). With --follow, print the lines as they come until it ends, and exit as publish "
        "--follow does; without, exit 0. " + EXIT_CODES_HELP
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_publishing_arguments(parser)
        parser.add_argument("--step", choices=LogLine.Step.values, help="only this step's lines")
        parser.add_argument(
            "--follow", action="store_true", help="print the lines as they come until it ends"
        )
        self.add_timing_arguments(parser)

    def handle(self, *args: Any, publishing: str, user: str | None, **options: Any) -> None:
        found, _ = find_publishing(publishing, user)
        console = self.console()
        if found.log_dropped:
            console.print(Text(f"[{found.log_dropped} earlier lines dropped]"))
        if options["follow"]:
            how = Following(
                stream_log=True, step=options["step"], timeout=options["timeout"], poll=options["poll"]
            )
            code = Follower(found, console, how).run()
            if code:
                raise SystemExit(code)
            return
        cursor = 0
        while True:
            page = selectors.log_page(found, since=cursor, step=options["step"])
            for line in page.lines:
                console.print(
                    Text(selectors.render_line(line.time, line.step, redact_credentials(line.text))), end=""
                )
            cursor = page.cursor
            if not page.more:
                return
