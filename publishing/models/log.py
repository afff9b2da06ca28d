"""A publishing's log, one row a line."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.db import models
from django.utils import timezone


class LogLine(models.Model):
    """One line of a publishing's log: what a step's command wrote, or what Publisher did (an event).

    Lines of one publishing are written while its row is locked, so their ids grow in the order they
    are committed: the id is the cursor a reader follows the log with.
    """

    class Step(models.TextChoices):
        CHECKOUT = "checkout"
        BUILD = "build"
        PACKAGE = "package"
        SUBMIT = "submit"
        # What Publisher itself did: queued, started, retried, cancelled, published, ...
        EVENT = "event"

    class Stream(models.TextChoices):
        # A command's stdout and stderr, on one pipe: the order they were written in is kept, which
        # two pipes could not promise.
        OUTPUT = "output"
        PUBLISHER = "publisher"

    # Characters of one line; the rest of a longer line continues on the next ones.
    LINE_LIMIT: ClassVar[int] = 4096

    id = models.BigAutoField(primary_key=True)
    # By name: publishings write their events here, so this module cannot import theirs.
    publishing = models.ForeignKey(
        "publishing.Publishing", on_delete=models.CASCADE, related_name="log_lines"
    )
    attempt = models.PositiveIntegerField(help_text="0 before the first attempt.")
    time = models.DateTimeField(default=timezone.now)
    step = models.CharField(max_length=16, choices=Step.choices)
    stream = models.CharField(max_length=16, choices=Stream.choices)
    text = models.TextField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["publishing", "id"], name="logline_publishing_id")]

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S.%f} {self.step} {self.text}"

    @classmethod
    def pieces(cls, text: str) -> list[str]:
        """One line of text as stored: NUL (which PostgreSQL's text refuses) replaced, a long one split."""
        # A build may print NUL (`cat /proc/self/environ`).
        text = text.replace("\x00", "\ufffd")
        return [text[start : start + cls.LINE_LIMIT] for start in range(0, len(text), cls.LINE_LIMIT)] or [""]

    @classmethod
    def size_of(cls, text: str) -> int:
        """What `text` counts against the log's cap: its characters and each line's end."""
        return sum(len(piece) + 1 for piece in cls.pieces(text))

    @classmethod
    def event(cls, publishing_id: uuid.UUID | str, attempt: int, text: str) -> list[LogLine]:
        """The rows (not saved) of an event: what Publisher did, in its own words."""
        now = timezone.now()
        return [
            cls(
                publishing_id=publishing_id,
                attempt=attempt,
                time=now,
                step=cls.Step.EVENT,
                stream=cls.Stream.PUBLISHER,
                text=piece,
            )
            for piece in cls.pieces(text)
        ]
