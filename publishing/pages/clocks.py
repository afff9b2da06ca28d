"""Times the publishing page shows, counted on in the browser: "for 42 s", "in 12 s", a step's duration.

A `Timing` is what a template draws: its text now and, for a live one, what the page's script counts
from (`data-clock`, `data-at`), with the same wording (`publishing.durations.human_duration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import timezone

from publishing.durations import human_duration


def iso(at: datetime) -> str:
    """UTC, always to the microsecond: the form the page's script reads."""
    return f"{at.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}Z"


@dataclass(frozen=True)
class Timing:
    """Text to show; with `counts` ("since" or "until") and `at`, the script keeps it current."""

    text: str
    counts: str = ""
    at: str = ""


@dataclass(frozen=True)
class Clock:
    """A time counted up from (`since`: "42 s") or down to (`until`: "in 12 s")."""

    at: datetime
    counts: str

    def text(self, now: datetime) -> str:
        if self.counts == "since":
            return human_duration((now - self.at).total_seconds())
        left = (self.at - now).total_seconds()
        return f"in {human_duration(left)}" if left >= 1 else "due now"

    def timing(self, now: datetime) -> Timing:
        return Timing(self.text(now), self.counts, iso(self.at))


def took(start: datetime | None, end: datetime | None, *, now: datetime | None = None) -> Timing:
    """How long something took; counting while it runs (`start` without `end`); nothing before it starts."""
    if start is None:
        return Timing("")
    if end is None:
        return Clock(start, "since").timing(now or timezone.now())
    return Timing(human_duration((end - start).total_seconds()))
