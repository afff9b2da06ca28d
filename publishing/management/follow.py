"""Following a publishing from a shell until it ends: one line that redraws in place on a terminal, a
line per change when piped, its log as it comes with --follow, and an exit code for how it ended."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from rich.console import Console
from rich.live import Live
from rich.text import Text

from publishing import selectors
from publishing.management.cli import (
    EXIT_CANCELLED,
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    MANAGE,
    cancel_hint,
    follow_hint,
)
from publishing.models import Attempt, LogLine, Publishing
from publishing.redaction import redact_credentials

Status = Publishing.Status
# Lines of the failing step shown when a publishing fails.
FAILURE_TAIL = 15
STEPS = (LogLine.Step.CHECKOUT, LogLine.Step.BUILD, LogLine.Step.PACKAGE, LogLine.Step.SUBMIT)
WAIT_WORDS = {
    "queue": "waiting for a free worker",
    "rate_limit": "waiting for a rate-limit slot",
    "retry_backoff": "waiting to retry",
}
STATUS_STYLE: dict[str, str] = {Status.PUBLISHED: "green", Status.FAILED: "red", Status.CANCELLED: "yellow"}


@dataclass(frozen=True)
class Following:
    """How to follow: print the log (--follow) from `since`, only `step`'s lines; give up after `timeout`."""

    stream_log: bool = False
    since: int = 0
    step: str | None = None
    timeout: float | None = None
    poll: float = 0.5


class Follower:
    """Follows one publishing until it ends, `timeout` passes or Ctrl-C; `run` returns the exit code."""

    def __init__(self, publishing: Publishing, console: Console, how: Following) -> None:
        self.publishing = publishing
        self.console = console
        self.how = how
        self.cursor = how.since
        self.attempt: Attempt | None = None
        self.newest = ""
        self.said = ""

    def run(self) -> int:
        deadline = None if self.how.timeout is None else time.monotonic() + self.how.timeout
        try:
            with self._display() as live:
                while not self._look():
                    if deadline is not None and time.monotonic() > deadline:
                        return self._left(
                            f"Still {self.publishing.status} after {self.how.timeout:g} s", EXIT_TIMEOUT
                        )
                    self._show(live)
                    time.sleep(self.how.poll)
        except KeyboardInterrupt:
            return self._left("Stopped following", EXIT_INTERRUPTED)
        return self._report()

    @contextmanager
    def _display(self) -> Iterator[Live | None]:
        if not self.console.is_terminal:
            yield None
            return
        # Transient: the line is erased at the end, and the report takes its place.
        with Live(self._line(), console=self.console, transient=True, auto_refresh=False) as live:
            yield live

    def _look(self) -> bool:
        """Read the status, then the log's new lines (printing them with --follow); True once it ended."""
        self.publishing.refresh_from_db()
        self.attempt = selectors.last_attempt(self.publishing.pk)
        while True:
            page = selectors.log_page(self.publishing, since=self.cursor, step=self.how.step)
            for line in page.lines:
                text = redact_credentials(line.text)
                if self.how.stream_log:
                    self.console.print(Text(selectors.render_line(line.time, line.step, text).rstrip("\n")))
                if line.stream == LogLine.Stream.OUTPUT and text.strip():
                    self.newest = text.strip()
            self.cursor = page.cursor
            if not page.more:
                # A publishing read finished has all its lines in by now (its end is logged with it).
                return self.publishing.is_terminal

    def _show(self, live: Live | None) -> None:
        if live is not None:
            live.update(self._line(), refresh=True)
            return
        if self.how.stream_log:
            return  # the log's own events say each change
        said = f"{self.publishing.status}: {self._where()}"
        if said != self.said:
            self.said = said
            self.console.print(Text(f"[{self._elapsed()}] {said}"))

    def _line(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        line.append(self.publishing.status, style=STATUS_STYLE.get(self.publishing.status, "bold"))
        line.append(f" · {self._where()} · {self._elapsed()}")
        if self.newest:
            line.append(f" · {self.newest}", style="dim")
        return line

    def _where(self) -> str:
        """What it does now: the wait it is in, or the step it runs."""
        waiting = selectors.waiting_of(self.publishing)
        if waiting is not None:
            words = WAIT_WORDS.get(waiting.reason, waiting.reason)
            if waiting.until is not None:
                words += f" until {timezone.localtime(waiting.until):%H:%M:%S}"
            if waiting.attempt > 1:
                words += f" (attempt {waiting.attempt} of {waiting.max_attempts})"
            return words
        if self.publishing.status == Status.PENDING:
            return "being queued"
        steps = self.attempt.steps if self.attempt else []
        if not steps:
            return "starting"
        name = str(steps[-1].get("name", ""))
        number = f" ({STEPS.index(name) + 1}/{len(STEPS)})" if name in STEPS else ""
        return f"{name}{number}"

    def _elapsed(self) -> str:
        end = self.publishing.finished_at or timezone.now()
        seconds = max(int((end - self.publishing.created_at).total_seconds()), 0)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def _left(self, why: str, code: int) -> int:
        """While it goes on without us: say so, and how to follow or cancel it."""
        pk = self.publishing.pk
        self.console.print(f"{why}: publishing {pk} is {self.publishing.status} and goes on.")
        self.console.print(Text(f"{follow_hint(pk)}\n{cancel_hint(pk)}"))
        return code

    def _report(self) -> int:
        publishing = self.publishing
        count = f"{publishing.attempts} attempt{'s' if publishing.attempts != 1 else ''}"
        took = f"after {count} in {self._elapsed()}"
        if publishing.status == Status.PUBLISHED:
            self.console.print(f"[green]Published[/] {publishing.pk} {took}: {publishing.artifact_uri}")
            self.console.print(f"sha256 {publishing.artifact_sha256}")
            return EXIT_DONE
        step = selectors.stopped_step(self.attempt) if self.attempt else None
        at = f" at {step}" if step else ""
        reason = f"{publishing.error_code}: {redact_credentials(publishing.error_message)}"
        if publishing.status == Status.CANCELLED:
            self.console.print(Text(f"Cancelled{at} {took}. {redact_credentials(publishing.error_message)}"))
            return EXIT_CANCELLED
        # On a terminal one line: the reason's words may repeat the output that the tail shows below.
        failed = Text(f"Failed{at} {took}: {reason}", style="red")
        if self.console.is_terminal:
            failed.truncate(self.console.width, overflow="ellipsis")
        self.console.print(failed)
        if step and self.attempt and not self.how.stream_log:
            self._tail(self.attempt.number, step)
        self.console.print(f"The whole log: {MANAGE} publishing_logs {publishing.pk}")
        self.console.print(f"Try it again: {MANAGE} publishing_retry {publishing.pk} --follow")
        return EXIT_FAILED

    def _tail(self, attempt: int, step: str) -> None:
        lines = selectors.log_tail(self.publishing.pk, attempt=attempt, step=step, limit=FAILURE_TAIL)
        if not lines:
            return
        self.console.print(
            f"The last line of {step}:" if len(lines) == 1 else f"The last {len(lines)} lines of {step}:"
        )
        for line in lines:
            self.console.print(Text(f"  {redact_credentials(line.text)}"))


def follow_if_asked(
    console: Console, publishing: Publishing, options: dict[str, Any], *, since: int = 0
) -> None:
    """With --wait or --follow, follow it and exit as it ended (return on 0); else say how to follow it."""
    if not (options["wait"] or options["follow"]):
        console.print(Text(follow_hint(publishing.pk)))
        return
    how = Following(
        stream_log=options["follow"], since=since, timeout=options["timeout"], poll=options["poll"]
    )
    code = Follower(publishing, console, how).run()
    if code != EXIT_DONE:
        raise SystemExit(code)
