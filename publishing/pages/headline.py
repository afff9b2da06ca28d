"""Where a publishing stands and why, in one sentence: the publishing page's header.

Pure: given the publishing, why it waits (`selectors.waiting_of`), the step its last attempt stopped
at and the time now, the same sentence every time. The times it counts to or from are `Clock`s, which
the page keeps counting in the browser ("for 42 s", "in 12 s"; `clocks.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from publishing.models import Publishing
from publishing.pages.clocks import Clock, Timing
from publishing.redaction import redact_credentials
from publishing.selectors import Waiting

Status = Publishing.Status

# An error message longer than this is cut in the header; the step's error box shows it whole.
MESSAGE_LIMIT = 160


@dataclass(frozen=True)
class Headline:
    """The sentence, as text and clocks in order; `tone` is its colour (queued, running, published, ...)."""

    tone: str
    parts: tuple[str | Clock, ...]

    def text(self, now: datetime) -> str:
        return "".join(part if isinstance(part, str) else part.text(now) for part in self.parts)

    def pieces(self, now: datetime) -> list[Timing]:
        """The parts as a template draws them."""
        return [Timing(part) if isinstance(part, str) else part.timing(now) for part in self.parts]


def clock_time(at: datetime, now: datetime) -> str:
    """19:44:20 today (UTC), 2026-12-05 19:44:20 on another day."""
    at, now = at.astimezone(UTC), now.astimezone(UTC)
    return f"{at:%H:%M:%S}" if at.date() == now.date() else f"{at:%Y-%m-%d %H:%M:%S}"


def error_text(publishing: Publishing, *, limit: int = MESSAGE_LIMIT) -> str:
    """`CODE message`, credentials redacted, cut to `limit` characters."""
    message = redact_credentials(publishing.error_message.strip())
    if len(message) > limit:
        message = message[: limit - 1].rstrip() + "…"
    return " ".join(part for part in (publishing.error_code, message) if part)


def headline(
    publishing: Publishing, *, waiting: Waiting | None, stopped_step: str | None, now: datetime
) -> Headline:
    """The header's sentence for `publishing`; `stopped_step` is where its last attempt stopped, if it did."""
    status = publishing.status
    if status == Status.QUEUED and waiting is not None:
        return _waiting(publishing, waiting, now)
    if status == Status.PENDING:
        return Headline("queued", ("Being queued",))
    if status in (Status.BUILDING, Status.SUBMITTING):
        return _running(publishing)
    if status == Status.PUBLISHED:
        return _published(publishing, now)
    if status == Status.CANCELLED:
        who = redact_credentials(publishing.error_message.strip()).rstrip(".") or "Cancelled"
        during = f" during {stopped_step}" if stopped_step else ""
        at = f" at {clock_time(publishing.finished_at, now)}" if publishing.finished_at else ""
        return Headline("cancelled", (f"{who}{during}{at}",))
    where = f" at {stopped_step}" if stopped_step else ""
    after = f" after {publishing.attempts} attempts" if publishing.attempts > 1 else ""
    error = error_text(publishing)
    return Headline("failed", (f"Failed{where}{after}" + (f": {error}" if error else ""),))


def _waiting(publishing: Publishing, waiting: Waiting, now: datetime) -> Headline:
    if waiting.until is not None and waiting.reason == "retry_backoff":
        after = f" after {publishing.error_code}" if publishing.error_code else ""
        retry = f"Retry {waiting.attempt - 1} of {waiting.max_attempts - 1}"
        return Headline(
            "queued",
            (
                f"{retry} at {clock_time(waiting.until, now)} (",
                Clock(waiting.until, "until"),
                f"){after}",
            ),
        )
    if waiting.until is not None and waiting.reason == "rate_limit":
        return Headline(
            "queued",
            (
                f"Waiting for a rate-limit slot, expected {clock_time(waiting.until, now)} (",
                Clock(waiting.until, "until"),
                ")",
            ),
        )
    retry = f"retry {waiting.attempt - 1} of {waiting.max_attempts - 1}" if waiting.attempt > 1 else ""
    if publishing.queued_at is None:
        return Headline("queued", ("Waiting for a free worker" + (f" ({retry})" if retry else ""),))
    queued = f"({retry}, queued " if retry else "(queued "
    return Headline(
        "queued", (f"Waiting for a free worker {queued}", Clock(publishing.queued_at, "since"), " ago)")
    )


def _running(publishing: Publishing) -> Headline:
    doing = "Building" if publishing.status == Status.BUILDING else "Submitting to the target"
    where = f" on {publishing.worker}" if publishing.worker else ""
    attempt = f" (attempt {publishing.attempts})" if publishing.attempts > 1 else ""
    if publishing.started_at is None:
        return Headline("running", (f"{doing}{where}{attempt}",))
    return Headline("running", (f"{doing}{where} for ", Clock(publishing.started_at, "since"), attempt))


def _published(publishing: Publishing, now: datetime) -> Headline:
    at = f" {clock_time(publishing.finished_at, now)}" if publishing.finished_at else ""
    sha = f" (sha256 {publishing.artifact_sha256[:12]}…)" if publishing.artifact_sha256 else ""
    return Headline("published", (f"Published{at}{sha}",))
