"""A publishing's log: its steps' output and what Publisher did (events), as lines, capped.

Every write takes the publishing's row lock before it inserts (it counts the characters it adds on the
row), so the lines of one publishing are committed in the order of their ids: a reader that asks for
the lines after the last id it saw never misses one. The newest PUBLISHING_LOG_LIMIT characters are
kept; the row counts the lines the cap dropped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Length

from publishing.models import LogLine, Publishing

logger = logging.getLogger(__name__)

# Once over the cap, the oldest lines go until the log is down to this share of it, so that a
# long-running build does not trim at every write.
TRIM_TO = 0.9


def store(
    publishing_id: uuid.UUID | str,
    lines: Sequence[LogLine],
    *,
    fence: Q | None = None,
    changes: dict[str, Any] | None = None,
    size: int | None = None,
) -> bool:
    """Append `lines` to the log and apply `changes` to the row, at once; False if `fence` no longer holds.

    `size`, the writer's own count of the log's characters after these lines, spares the read of the
    row's count that decides whether to trim.
    """
    added = sum(LogLine.size_of(line.text) for line in lines)
    with transaction.atomic():
        rows = Publishing.objects.filter(pk=publishing_id)
        if fence is not None:
            rows = rows.filter(fence)
        # The row lock that orders this publishing's lines (see the module's docstring).
        if not rows.update(log_size=F("log_size") + added, **(changes or {})):
            return False
        LogLine.objects.bulk_create(lines)
        if size is None:
            size = Publishing.objects.filter(pk=publishing_id).values_list("log_size", flat=True).first() or 0
        if size > settings.PUBLISHING_LOG_LIMIT:
            trim(publishing_id)
    return True


def log_event(publishing_id: uuid.UUID | str, text: str, *, attempt: int | None = None) -> None:
    """Write one event to a publishing's log; of its current attempt unless told which."""
    if attempt is None:
        attempt = Publishing.objects.filter(pk=publishing_id).values_list("attempts", flat=True).first() or 0
    store(publishing_id, LogLine.event(publishing_id, attempt, text))


def trim(publishing_id: uuid.UUID | str) -> int:
    """Drop the oldest lines until the log is within its cap (with room to grow); the log's size after.

    Called inside the transaction that holds the row lock.
    """
    size = Publishing.objects.filter(pk=publishing_id).values_list("log_size", flat=True).get()
    excess = size - int(settings.PUBLISHING_LOG_LIMIT * TRIM_TO)
    if excess <= 0:
        return size
    freed = dropped = 0
    last_id = None
    oldest = (
        LogLine.objects.filter(publishing_id=publishing_id)
        .order_by("id")
        .values_list("id", Length("text"))
        .iterator(chunk_size=500)
    )
    for line_id, length in oldest:
        freed, dropped, last_id = freed + length + 1, dropped + 1, line_id
        if freed >= excess:
            break
    if last_id is not None:
        LogLine.objects.filter(publishing_id=publishing_id, id__lte=last_id).delete()
        Publishing.objects.filter(pk=publishing_id).update(
            log_size=F("log_size") - freed, log_dropped=F("log_dropped") + dropped
        )
    return size - freed
